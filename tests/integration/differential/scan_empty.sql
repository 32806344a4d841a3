select * from users where id < 0 and name = 'x'
