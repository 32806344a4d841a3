select min(placed_at), max(placed_at) from orders
