select c.name, count(*) from orders o join users u on u.id = o.user_id join countries c on c.code = u.country group by c.name
