delete from order_items where id > 100000 returning id, user_id, sku
