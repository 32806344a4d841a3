-- error: 0A000
select count(*) from users u where exists (select 1 from orders o where o.id = u.id)
