select status, avg(qty)::int as q from orders group by status having avg(amount)::int > 100
