select sum(amount)::numeric(8,1) as s, sum(qty)::numeric(6,2) as q from orders where user_id < 50
