select min(created), max(created) from users
