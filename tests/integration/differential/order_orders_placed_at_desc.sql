-- ordered
select id, user_id, placed_at from orders order by placed_at desc, id desc, user_id
