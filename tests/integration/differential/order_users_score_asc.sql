-- ordered
select id, score from users order by score, id
