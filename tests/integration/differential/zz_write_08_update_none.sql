update users set score = 0 where id < 0
