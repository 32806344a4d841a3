-- error: 0A000
with x as (select id from users) select count(*) from orders o join x on x.id = o.id
