-- error: 0A000
select handle, count(*) from profiles group by handle order by handle
