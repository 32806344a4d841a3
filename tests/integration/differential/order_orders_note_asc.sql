-- ordered
select id, user_id, note from orders order by note, id, user_id
