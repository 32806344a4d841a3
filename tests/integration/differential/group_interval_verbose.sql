-- text-error: 0A000
-- (binary intervals compare by span whatever the style: merged exactly)
-- set: intervalstyle = 'postgres_verbose'
select count(*) from metrics group by span
