select nick, count(*) from profiles group by nick
