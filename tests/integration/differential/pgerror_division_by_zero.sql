select id, 1 / (qty - qty) from orders
