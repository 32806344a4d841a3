-- error: 0A000
select id from users intersect select user_id from orders
