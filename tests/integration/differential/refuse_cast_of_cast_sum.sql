-- error: 0A000
select sum(amount)::int::numeric from orders
