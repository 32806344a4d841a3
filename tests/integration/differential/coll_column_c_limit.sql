-- ordered
select nick, user_id from profiles order by nick desc, user_id limit 7
