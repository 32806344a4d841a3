-- ordered
select * from countries order by code
