select count(*)::int from orders
