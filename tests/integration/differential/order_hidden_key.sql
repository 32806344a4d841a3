-- ordered
select name from users order by id
