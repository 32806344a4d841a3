select user_id, count(*) from orders group by user_id having count(*) >= 5 and count(*) <= 5
