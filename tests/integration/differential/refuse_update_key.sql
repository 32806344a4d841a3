-- error: 0A000
update orders set user_id = user_id + 1 where status = 'x'
