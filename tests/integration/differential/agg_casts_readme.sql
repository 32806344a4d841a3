select sum(qty)::numeric(20,2) as total, count(*)::int as n, count(*)::numeric(10,1) as c from orders
