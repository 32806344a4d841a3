select count(*) from users
