select score, count(*) from users group by score
