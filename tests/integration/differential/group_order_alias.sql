-- ordered
select status, sum(amount) as total from orders group by status order by total desc
