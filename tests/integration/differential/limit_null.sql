-- ordered
select id from users order by id limit null
