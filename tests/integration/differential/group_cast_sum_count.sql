select status, sum(qty)::int as q, count(*)::bigint as n from orders group by status
