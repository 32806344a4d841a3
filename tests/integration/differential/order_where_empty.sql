-- ordered
select id from users where id < 0 order by id
