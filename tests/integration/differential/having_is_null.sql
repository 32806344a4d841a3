select country, count(*) from users group by country having country is null
