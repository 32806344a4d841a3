-- error: 0A000
select status, count(*) from orders group by rollup (status)
