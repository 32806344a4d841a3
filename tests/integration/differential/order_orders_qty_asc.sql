-- ordered
select id, user_id, qty from orders order by qty, id, user_id
