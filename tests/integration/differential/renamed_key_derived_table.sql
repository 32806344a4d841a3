select * from (select user_id + 1 as user_id, id from orders) s where user_id = 3
