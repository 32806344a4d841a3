-- ordered
-- params: 3
select id from users order by id limit $1
