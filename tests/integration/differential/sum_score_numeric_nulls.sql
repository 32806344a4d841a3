select sum(score) from users
