-- error: 0A000
select count(*) from users u1 join users u2 on u1.country = u2.country
