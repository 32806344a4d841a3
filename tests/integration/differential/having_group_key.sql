select country, count(*) from users group by country having country <> 'US'
