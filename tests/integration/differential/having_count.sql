select status, count(*) from orders group by status having count(*) > 370
