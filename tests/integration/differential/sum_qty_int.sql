select sum(qty) from orders
