-- error: 0A000
select sum(distinct qty) from orders
