select avg(score) from users where score < 100
