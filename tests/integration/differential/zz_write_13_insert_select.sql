-- INSERT ... SELECT across shards: pgshard runs the SELECT and puts each row on its key's shard
insert into order_items (id, order_id, user_id, sku, price, qty)
select id + 100000, id, user_id, 'COPY-' || status, amount, qty from orders
where user_id between 10 and 60 and note is null
returning id, user_id, sku, price, qty
