select distinct country from users
