select count(*) from (select user_id * 0 as user_id from orders) s where user_id = 0
