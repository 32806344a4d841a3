-- ordered
select p.nick, u.id from profiles p join users u on u.id = p.user_id order by p.nick, u.id limit 20
