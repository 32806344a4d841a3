-- error: 0A000
select u.id, o.id from users u join orders o on o.id = u.id
