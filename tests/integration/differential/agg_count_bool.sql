select count(active) from users where active
