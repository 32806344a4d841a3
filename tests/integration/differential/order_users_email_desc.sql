-- ordered
select id, email from users order by email desc, id
