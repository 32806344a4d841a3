-- error: 0A000
select sum(amount) / count(*) from orders
