-- error: 0A000
select count(*) from users u join orders o(user_id, x) on u.id = o.user_id
