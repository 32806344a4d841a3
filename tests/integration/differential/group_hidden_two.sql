select sum(amount) from orders group by status, qty
