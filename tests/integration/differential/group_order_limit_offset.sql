-- ordered
select user_id, count(*) from orders group by user_id order by count(*) desc, user_id limit 10 offset 5
