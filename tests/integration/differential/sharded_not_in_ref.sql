select count(*) from order_items i where i.sku not in (select sku from products where price > 20)
