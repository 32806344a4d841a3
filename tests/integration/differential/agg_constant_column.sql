select 'total' as label, count(*) from orders
