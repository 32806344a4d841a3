select count(*) as n, sum(qty) as total_qty, avg(amount) as mean from orders
