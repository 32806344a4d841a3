select id, coalesce(email, 'none') as e from users where id % 7 = 0
