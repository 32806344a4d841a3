-- ordered
select * from users order by id desc
