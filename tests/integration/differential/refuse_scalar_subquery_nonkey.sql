-- error: 0A000
select (select count(*) from orders o where o.id = u.id) from users u order by u.id limit 5
