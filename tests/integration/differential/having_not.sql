select status, count(*) from orders group by status having not count(*) = 375
