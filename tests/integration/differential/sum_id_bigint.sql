select sum(id) from users
