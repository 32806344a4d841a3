-- ordered
select id from users order by id desc limit all
