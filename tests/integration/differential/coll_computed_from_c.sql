-- error: 0A000
select user_id, lower(nick) l from profiles order by l, user_id
