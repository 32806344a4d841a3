-- error: 0A000
select status, qty, count(*) from orders group by grouping sets ((status), (qty))
