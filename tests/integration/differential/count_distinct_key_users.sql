select count(distinct id) from users
