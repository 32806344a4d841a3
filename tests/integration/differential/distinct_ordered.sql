-- ordered
select distinct name from users order by name
