select status, count(*) filter (where qty > 4) from orders group by status
