select sum(price)::numeric(14,1) as p, sum(price)::int as i from order_items
