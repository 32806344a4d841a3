-- ordered
select id, score::int as s from users where score is not null order by score::int, id
