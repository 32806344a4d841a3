-- ordered
select status, placed_at, id from orders where qty = 2 order by status, placed_at desc, id
