select id, name from users where name = 'bob'
