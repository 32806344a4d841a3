select id, active, not active as inactive from users where id % 10 = 0
