-- error: 0A000
select sum(qty) * 2 from orders
