-- error: 0A000
select string_agg(name, ',') from users
