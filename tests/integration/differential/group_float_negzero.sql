-- float8 -0 and 0 are one group
select count(*) from users group by (case when id % 2 = 0 then '-0'::float8 else '0'::float8 end)
