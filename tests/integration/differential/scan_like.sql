select id, email from users where email like 'u1%'
