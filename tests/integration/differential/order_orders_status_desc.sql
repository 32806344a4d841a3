-- ordered
select id, user_id, status from orders order by status desc, id desc, user_id
