-- ordered
select country, name, id from users order by 1, 3
