-- error: 0A000
select count(*) from orders o, users u where u.id = o.id
