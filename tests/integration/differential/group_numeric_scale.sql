-- numeric 1.5 and 1.50 are one group (equal by value, not by text)
select count(*) from users group by (case when id % 2 = 0 then 1.5 else 1.50 end)
