-- ordered
select user_id, nick from profiles order by nick, user_id
