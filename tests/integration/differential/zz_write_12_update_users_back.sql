update users set active = not active where id % 50 = 0
