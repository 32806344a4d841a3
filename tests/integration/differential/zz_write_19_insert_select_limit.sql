-- ORDER BY with LIMIT across shards: the top rows overall, not per shard
insert into order_items (id, order_id, user_id, sku, price, qty)
select id + 300000, id, user_id, 'TOP', amount, qty from orders
order by amount desc, id limit 7
returning id, user_id, price
