-- ordered
select id, created from users order by created, id fetch first 4 rows only
