select o.id, c.name from orders o join users u on u.id = o.user_id join countries c on c.code = u.country where o.qty = 1
