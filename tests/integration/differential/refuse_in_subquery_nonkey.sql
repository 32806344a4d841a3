-- error: 0A000
select count(*) from orders o where o.id in (select id from users)
