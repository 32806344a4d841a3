-- ordered
select id, email from users order by email, id
