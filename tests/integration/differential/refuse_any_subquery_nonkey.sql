-- error: 0A000
select count(*) from users u where u.id = any (select o.id from orders o)
