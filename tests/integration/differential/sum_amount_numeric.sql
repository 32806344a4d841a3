select sum(amount) from orders
