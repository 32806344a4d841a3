-- ordered
select id, name from users order by id limit 3 offset 1000
