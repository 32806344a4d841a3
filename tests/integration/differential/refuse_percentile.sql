-- error: 0A000
select percentile_cont(0.5) within group (order by amount) from orders
