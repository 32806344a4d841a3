select min(amount), max(amount) from orders
