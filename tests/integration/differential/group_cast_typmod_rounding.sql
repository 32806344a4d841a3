select status, sum(amount)::numeric(20,0) as s from orders group by status
