-- error: 0A000
select count(*) from orders where id in (select user_id from (select id + 1 as user_id from users) p where user_id = 3)
