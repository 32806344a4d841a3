-- ordered
select name, id from users order by 2 desc
