select count(*) filter (where qty > 5), sum(amount) filter (where status = 'paid') from orders
