-- ordered
select id, user_id, status from orders order by status, id, user_id
