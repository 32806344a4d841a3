-- ordered
select id, score from users order by score nulls first, id
