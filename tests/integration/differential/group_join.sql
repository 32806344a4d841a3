select u.country, count(o.id), sum(o.amount) from users u join orders o on o.user_id = u.id group by u.country
