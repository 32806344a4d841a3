-- error: 0A000
select min(nick), max(nick) from profiles
