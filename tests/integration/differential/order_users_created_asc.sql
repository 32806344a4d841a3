-- ordered
select id, created from users order by created, id
