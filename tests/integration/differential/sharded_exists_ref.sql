select count(*) from order_items i where exists (select 1 from products p where p.sku = i.sku and p.price > 10)
