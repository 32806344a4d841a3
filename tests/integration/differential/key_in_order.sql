-- ordered
select id, user_id from orders where user_id in (8, 15, 22) order by user_id, id
