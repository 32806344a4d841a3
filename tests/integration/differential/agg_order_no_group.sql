-- ordered
select count(*) from orders order by 1
