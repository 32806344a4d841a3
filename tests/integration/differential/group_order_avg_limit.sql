-- ordered
select user_id, avg(amount) from orders group by user_id order by avg(amount) desc, user_id limit 5
