-- ordered
select id, lower(name) l from users order by l, id
