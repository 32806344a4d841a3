select min(score), max(score) from users
