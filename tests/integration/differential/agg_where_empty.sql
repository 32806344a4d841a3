select count(*), sum(amount), avg(qty), min(status), max(placed_at) from orders where qty > 100
