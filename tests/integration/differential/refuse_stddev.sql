-- error: 0A000
select stddev(amount) from orders
