-- ordered
select id, name from users order by lower(name), id
