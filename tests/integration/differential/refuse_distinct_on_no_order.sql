-- error: 0A000
select distinct on (status) status, id from orders
