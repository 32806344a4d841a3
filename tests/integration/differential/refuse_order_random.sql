-- error: 0A000
select id from users order by random()
