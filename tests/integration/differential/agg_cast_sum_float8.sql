select sum(qty)::float8, count(*)::real from orders
