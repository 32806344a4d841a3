select 'x' as tag, status, count(*) from orders group by status
