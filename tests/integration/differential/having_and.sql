select qty, count(*) from orders group by qty having count(*) > 100 and min(amount) < 100
