select o.id, i.sku from orders o join order_items i on i.user_id = o.user_id and i.order_id = o.id where i.qty = 4
