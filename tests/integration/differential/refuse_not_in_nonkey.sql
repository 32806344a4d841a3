-- error: 0A000
select u.name from users u where u.id not in (select o.id from orders o where o.id is not null)
