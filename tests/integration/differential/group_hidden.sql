select count(*) from orders group by status
