select count(*), sum(price) from order_items where sku = 'NEW'
