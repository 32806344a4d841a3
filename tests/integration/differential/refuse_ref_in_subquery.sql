-- error: 0A000
select count(*) from products p where p.sku in (select sku from order_items)
