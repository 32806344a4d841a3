-- ordered
select id, user_id from orders order by amount * qty, id, user_id
