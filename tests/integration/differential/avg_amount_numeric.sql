select avg(amount) from orders
