select distinct status, qty from orders
