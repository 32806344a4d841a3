select count(score), count(*) from users
