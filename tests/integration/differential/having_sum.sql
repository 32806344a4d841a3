select qty, sum(amount) from orders group by qty having sum(amount) > 80000
