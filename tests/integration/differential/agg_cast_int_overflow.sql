-- Past integer: 22003, as on PostgreSQL (before: 0A000)
select sum(qty::bigint * 1000000000)::int from orders
