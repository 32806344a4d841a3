select status, sum(amount)::numeric(20,1) as s, count(*)::int as n from orders group by status
