select p.sku, i.id from products p left join order_items i on i.sku = p.sku where i.user_id = 8
