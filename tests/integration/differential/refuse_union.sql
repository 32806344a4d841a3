-- error: 0A000
select id from users union select user_id from orders
