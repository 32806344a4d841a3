-- ordered
-- params: new
select qty, sum(amount) from orders where status <> $1 group by qty order by qty
