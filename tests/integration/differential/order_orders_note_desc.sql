-- ordered
select id, user_id, note from orders order by note desc, id desc, user_id
