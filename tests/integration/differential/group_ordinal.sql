select status, count(*) from orders group by 1
