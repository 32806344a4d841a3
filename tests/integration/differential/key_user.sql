select * from users where id = 42
