-- The average is cast once, after the merge.
select avg(amount)::numeric(10,2) as a, avg(qty)::int as q, avg(amount)::float8 as f from orders
