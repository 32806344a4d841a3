-- error: 0A000
select id, row_number() over (order by id) from users
