-- error: 0A000
select coalesce(sum(amount), 0) from orders
