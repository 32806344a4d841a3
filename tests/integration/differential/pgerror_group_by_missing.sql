select status, qty, count(*) from orders group by status
