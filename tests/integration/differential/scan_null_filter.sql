select id, country from users where country is null
