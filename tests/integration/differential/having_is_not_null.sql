select country, sum(score) from users group by country having sum(score) is not null
