-- ordered
select id, score from users order by score desc nulls last, id limit 10
