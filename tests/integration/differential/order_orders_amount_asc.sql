-- ordered
select id, user_id, amount from orders order by amount, id, user_id
