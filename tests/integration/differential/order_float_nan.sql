-- ordered
-- NaN sorts above every other float8
select id, case when id % 5 = 0 then 'NaN'::float8 else (id % 7)::float8 end as v from users order by v desc, id limit 80
