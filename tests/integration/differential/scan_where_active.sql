select id, name, score from users where active
