select user_id, count(*), sum(amount) from orders group by user_id
