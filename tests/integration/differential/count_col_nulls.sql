select count(email) from users
