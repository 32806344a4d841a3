-- ordered
select status, count(*) from orders group by status order by sum(amount)::int desc
