select min(name), max(name) from users
