-- error: 0A000
select count(*) + 1 from orders
