-- An infinite numeric average into numeric(10,2): 22003 numeric field overflow (before: Infinity)
select avg(num * 'Infinity'::numeric)::numeric(10,2), sum(num * '-Infinity'::numeric)::numeric(10,2) from metrics
