-- ordered
select distinct qty from orders order by qty desc
