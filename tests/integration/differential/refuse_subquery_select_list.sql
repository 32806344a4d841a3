-- error: 0A000
select id, (select count(*) from orders) from users
