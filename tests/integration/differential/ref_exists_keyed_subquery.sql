select p.sku from products p where exists (select 1 from order_items i where i.sku = p.sku and i.user_id = 8)
