-- ordered
select qty, count(*) from orders group by qty having count(*) > 10 order by qty desc limit 3
