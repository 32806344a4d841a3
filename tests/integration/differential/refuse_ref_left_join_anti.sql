-- error: 0A000
select count(*) from products p left join order_items i on i.sku = p.sku where i.id is null
