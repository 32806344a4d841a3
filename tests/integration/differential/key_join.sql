-- ordered
select u.name, o.id from users u join orders o on o.user_id = u.id where u.id = 57 order by o.id
