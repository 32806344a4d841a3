-- ordered
select distinct on (user_id) user_id, amount from orders order by user_id, amount limit 10
