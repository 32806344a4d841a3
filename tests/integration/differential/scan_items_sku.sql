select id, order_id, sku, price from order_items where sku = 'SKU-7'
