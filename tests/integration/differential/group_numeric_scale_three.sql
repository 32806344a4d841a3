select count(*) from (select 1) x cross join users group by (case when users.id % 3 = 0 then 2.0 when users.id % 3 = 1 then 2.00 else 2 end)
