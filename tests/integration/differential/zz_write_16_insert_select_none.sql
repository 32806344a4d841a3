-- INSERT ... SELECT of no rows: the tag and the RETURNING columns of one PostgreSQL
insert into order_items (id, order_id, user_id, sku, price, qty)
select id, id, user_id, sku, price, qty from order_items where qty > 1000
returning id, sku, price
