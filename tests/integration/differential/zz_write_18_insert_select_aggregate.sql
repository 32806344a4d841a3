-- error: 0A000
-- A SELECT whose answer needs a merge across shards: refused, never a wrong row
insert into order_items (id, order_id, user_id, sku, price, qty)
select max(id) + 1, 1, 1, 'MAX', 1, 1 from order_items
