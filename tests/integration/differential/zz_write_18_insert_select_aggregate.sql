-- A SELECT whose answer is merged across shards (aggregates, GROUP BY): its merged rows go in
insert into order_items (id, order_id, user_id, sku, price, qty)
select max(id), count(*), min(user_id), 'AGG-' || status, sum(amount), 1 from orders
group by status
returning order_id, user_id, sku, price
