-- ordered
select * from orders order by placed_at, user_id, id
