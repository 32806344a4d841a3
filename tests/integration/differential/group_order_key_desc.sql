-- ordered
select qty, sum(amount) from orders group by qty order by qty desc
