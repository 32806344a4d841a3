select u.id, o.id as oid from users u left join orders o on o.user_id = u.id and o.qty = 7 where u.id % 25 = 0
