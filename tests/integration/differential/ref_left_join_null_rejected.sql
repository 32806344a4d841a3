-- WHERE drops the rows without a sharded match: an inner join in effect.
select p.sku, i.id from products p left join order_items i on i.sku = p.sku where i.qty > 2
