-- ordered
select o.id, c.name from orders o join users u on u.id = o.user_id join countries c on c.code = u.country order by c.name, o.id, o.user_id
