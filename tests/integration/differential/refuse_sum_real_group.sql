-- error: 0A000
select status, sum(qty::real) from orders group by status order by status
