select status, avg(amount) from orders group by status having avg(amount) > 499.5
