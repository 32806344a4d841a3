-- ordered
select u.id, o.id from users u join orders o on o.user_id = u.id order by o.id, u.id limit 12
