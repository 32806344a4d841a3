select distinct status from orders
