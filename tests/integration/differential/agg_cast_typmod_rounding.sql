select sum(amount)::numeric(20,0) as s from orders
