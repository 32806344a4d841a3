-- ordered
select id, user_id, qty from orders order by qty desc, id desc, user_id
