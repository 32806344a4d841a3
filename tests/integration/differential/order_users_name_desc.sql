-- ordered
select id, name from users order by name desc, id
