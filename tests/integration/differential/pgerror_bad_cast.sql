select id from users where name::int > 1
