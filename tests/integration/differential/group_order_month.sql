-- ordered
select date_trunc('month', placed_at) as m, count(*) from orders group by 1 order by 1
