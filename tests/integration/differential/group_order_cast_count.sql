-- ordered
select qty, count(*)::int4 from orders group by qty order by 2 desc, qty
