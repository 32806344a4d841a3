select status, sum(amount), avg(amount) from orders group by status
