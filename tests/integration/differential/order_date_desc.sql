-- ordered
select created, id from users order by created desc, id desc
