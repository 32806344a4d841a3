with x(user_id) as (select id from orders) select * from x where user_id = 3
