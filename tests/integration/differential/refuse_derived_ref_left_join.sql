-- error: 0A000
select p.sku, i.id from (select sku from products where price > 5) p left join order_items i using (sku)
