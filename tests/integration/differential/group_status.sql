select status, count(*) from orders group by status
