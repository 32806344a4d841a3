-- ordered
-- params: %o%
select id from users where name like $1 order by id
