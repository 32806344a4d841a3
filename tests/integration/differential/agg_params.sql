-- params: 4
select count(*), sum(qty) from orders where qty > $1
