select sum(score) from users where score < 0
