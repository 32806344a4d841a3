-- error: 0A000
select count(*) from products p full join order_items i on i.sku = p.sku
