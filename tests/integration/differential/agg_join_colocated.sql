select count(*), sum(o.amount) from users u join orders o on o.user_id = u.id where u.active
