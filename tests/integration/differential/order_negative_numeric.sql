-- ordered
select id, score from users where score < 0 order by score, id
