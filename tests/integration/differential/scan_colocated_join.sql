select u.id, u.name, o.id as order_id, o.amount from users u join orders o on o.user_id = u.id where o.qty = 8
