select avg(id) from users
