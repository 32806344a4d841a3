select qty, count(*) from orders group by qty having count(*) < 167 or max(amount) > 999
