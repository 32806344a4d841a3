select country, count(*), avg(score) from users group by country
