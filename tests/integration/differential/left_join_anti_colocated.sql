select count(*) from users u left join orders o on o.user_id = u.id where o.user_id is null
