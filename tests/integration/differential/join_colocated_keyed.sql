select u.id, count(o.id) from users u join orders o on o.user_id = u.id and u.id = 7 group by u.id
