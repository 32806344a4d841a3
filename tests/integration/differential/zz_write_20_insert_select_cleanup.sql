delete from order_items where sku in ('TOP') or sku like 'AGG-%' returning id, sku
