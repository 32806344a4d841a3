-- error: 0A000
select avg(amount)::numeric(10,2) from orders
