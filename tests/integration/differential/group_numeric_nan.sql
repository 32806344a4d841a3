-- numeric NaN is one group and sorts above every number
-- ordered
select case when id % 5 = 0 then 'NaN'::numeric else (id % 3)::numeric end as v, count(*) from users group by 1 order by 1
