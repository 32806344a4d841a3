select status from orders group by status having sum(amount)::int > 1000
