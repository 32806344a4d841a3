-- ordered
select id, name from users order by id limit 10 offset 3
