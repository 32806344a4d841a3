select count(*) from metrics group by ratio
