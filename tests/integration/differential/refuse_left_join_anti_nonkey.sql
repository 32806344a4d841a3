-- error: 0A000
select count(*) from users u left join orders o on o.id = u.id where o.id is null
