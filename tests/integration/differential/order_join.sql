-- ordered
select u.name, o.id, o.amount from users u join orders o on o.user_id = u.id where o.status = 'new' order by o.amount desc, o.id, u.name
