-- ordered
select status, qty, count(*) from orders group by status, qty order by status, qty desc
