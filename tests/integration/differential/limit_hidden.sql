-- ordered
select name from users order by id desc limit 5
