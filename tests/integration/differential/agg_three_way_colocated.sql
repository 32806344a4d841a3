select count(*) from orders o join users u on u.id = o.user_id join order_items i on i.user_id = o.user_id and i.order_id = o.id
