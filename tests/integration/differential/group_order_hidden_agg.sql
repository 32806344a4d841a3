-- ordered
select status from orders group by status order by max(amount), status
