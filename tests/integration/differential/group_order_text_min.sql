-- ordered
select country, min(name) from users group by country order by min(name), country nulls first
