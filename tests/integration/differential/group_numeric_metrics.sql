select count(*) from metrics group by num
