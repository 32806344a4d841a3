-- ordered
select email from users order by created desc, id
