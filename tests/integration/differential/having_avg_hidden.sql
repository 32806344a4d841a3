select status from orders group by status having avg(qty) > 4
