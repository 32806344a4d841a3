-- error: 0A000
select status from orders group by status having abs(sum(qty)) > 3
