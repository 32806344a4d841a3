-- ordered
select id, name from users order by id limit 0
