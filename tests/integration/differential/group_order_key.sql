-- ordered
select qty, count(*) from orders group by qty order by qty
