-- ordered
select nick, count(*) from profiles group by nick order by nick
