select status, count(distinct user_id) from orders group by status
