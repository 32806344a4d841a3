select avg(score) from users
