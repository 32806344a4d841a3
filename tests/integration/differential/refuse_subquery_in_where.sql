-- error: 0A000
select id from users where id in (select user_id from orders where amount > 900)
