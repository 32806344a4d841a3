select u.id, u.name, count(*) from users u join orders o on o.user_id = u.id group by u.id
