select status, count(*) from orders where qty > 100 group by status
