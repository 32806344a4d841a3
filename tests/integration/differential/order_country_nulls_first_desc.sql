-- ordered
select id, country from users order by country desc nulls first, id desc
