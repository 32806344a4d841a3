-- ordered
select status, count(*) from orders group by status order by count(*) desc, status
