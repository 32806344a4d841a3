insert into order_items (id, order_id, user_id, sku, price, qty) values (9001, 1, 8, 'NEW', 1.50, 1), (9002, 2, 15, 'NEW', 2.25, 2), (9003, 3, 22, 'NEW', 3.00, 3) returning id, user_id
