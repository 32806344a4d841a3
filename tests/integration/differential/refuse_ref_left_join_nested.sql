-- error: 0A000
select count(*) from countries c left join (users u join orders o on o.user_id = u.id) on u.country = c.code
