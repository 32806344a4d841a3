select lower(name) as n, count(*) from users group by lower(name)
