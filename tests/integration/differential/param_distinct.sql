-- ordered
-- params: 2
select distinct status from orders where qty < $1 order by status
