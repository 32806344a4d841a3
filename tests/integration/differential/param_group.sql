-- params: 6
select status, count(*) from orders where qty > $1 group by status
