select date_trunc('month', placed_at) as month, count(*), sum(qty) from orders group by 1
