delete from order_items where sku = 'SKU-49' returning id, user_id
