select status, sum(amount)::int as total, sum(amount)::bigint from orders group by status
