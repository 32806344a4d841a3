select distinct u.country from users u join orders o on o.user_id = u.id
