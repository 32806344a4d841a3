-- ordered
select country, count(*) from users group by country order by country nulls first
