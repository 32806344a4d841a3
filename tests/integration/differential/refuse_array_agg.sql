-- error: 0A000
select array_agg(id) from users
