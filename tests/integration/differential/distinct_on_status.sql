-- ordered
select distinct on (status) status, id, placed_at from orders order by status, placed_at, id
