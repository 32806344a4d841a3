-- error: 0A000
select count(*) from orders o join (select id from users) u on u.id = o.id
