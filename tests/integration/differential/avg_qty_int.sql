select avg(qty) from orders
