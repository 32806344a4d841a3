select extract(year from created) as y, count(*) from users group by 1
