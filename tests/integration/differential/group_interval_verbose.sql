-- error: 0A000
-- set: intervalstyle = 'postgres_verbose'
select count(*) from metrics group by span
