-- ordered
select distinct on (user_id) user_id, id, amount from orders order by user_id, amount desc, id
