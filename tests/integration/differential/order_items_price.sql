-- ordered
select id, price, qty from order_items order by price desc, id
