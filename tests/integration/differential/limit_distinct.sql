-- ordered
select distinct status from orders order by status limit 2
