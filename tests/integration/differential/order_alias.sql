-- ordered
select id, amount * qty as total from orders order by total desc, id, user_id
