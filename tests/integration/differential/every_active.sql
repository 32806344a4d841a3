select every(active) from users where id % 3 <> 0
