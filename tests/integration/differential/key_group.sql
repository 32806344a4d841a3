select status, count(*) from orders where user_id = 99 group by status
