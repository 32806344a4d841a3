-- ordered
select id, country from users order by country, id
