-- error: 0A000
select round(avg(amount), 2) from orders group by status
