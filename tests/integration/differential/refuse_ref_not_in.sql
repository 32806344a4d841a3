-- error: 0A000
select count(*) from products p where p.sku not in (select sku from order_items where sku is not null)
