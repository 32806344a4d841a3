-- error: 0A000
with i as (select sku from order_items) select p.sku, count(i.sku) from products p left join i on i.sku = p.sku group by p.sku
