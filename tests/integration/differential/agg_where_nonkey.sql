select avg(amount), count(*) from orders where status = 'shipped'
