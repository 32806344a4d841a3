-- error: 0A000
select count(distinct status) from orders
