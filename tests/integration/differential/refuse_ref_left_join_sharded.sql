-- error: 0A000
-- Unmatched products would come once per shard.
select p.sku, i.id from products p left join order_items i on i.sku = p.sku
