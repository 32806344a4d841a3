-- ordered
select id, user_id, placed_at from orders order by placed_at, id, user_id
