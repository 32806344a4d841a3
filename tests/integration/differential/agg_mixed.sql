select count(*), sum(qty), avg(qty), min(qty), max(qty) from orders where status <> 'cancelled'
