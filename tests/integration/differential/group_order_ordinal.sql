-- ordered
select status, sum(amount) from orders group by status order by 2
