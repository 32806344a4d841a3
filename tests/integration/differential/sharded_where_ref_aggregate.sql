select o.id from orders o where o.amount > (select avg(price) * 20 from products)
