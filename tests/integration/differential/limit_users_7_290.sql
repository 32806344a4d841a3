-- ordered
select id, name from users order by id limit 7 offset 290
