delete from order_items where sku = 'NEW'
