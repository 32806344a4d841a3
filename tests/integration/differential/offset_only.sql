-- ordered
select id from users order by id offset 295
