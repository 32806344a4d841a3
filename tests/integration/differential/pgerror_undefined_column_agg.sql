select sum(nope) from orders
