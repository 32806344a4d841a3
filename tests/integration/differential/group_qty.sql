select qty, count(*), sum(amount) from orders group by qty
