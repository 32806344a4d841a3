select count(*), sum(amount) from orders where user_id = 8
