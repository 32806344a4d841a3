-- The key in the subquery pins one shard, which holds every sharded row read.
select count(*) from products p where p.sku not in (select sku from order_items i where i.user_id = 5)
