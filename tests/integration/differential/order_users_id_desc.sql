-- ordered
select id, id from users order by id desc, id
