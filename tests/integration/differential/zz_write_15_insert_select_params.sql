-- params: 20|40
insert into order_items (id, order_id, user_id, sku, price, qty)
select o.id + 200000, o.id, o.user_id, u.name, o.amount * 2, 1 from orders o
join users u on u.id = o.user_id
where o.user_id between $1 and $2
returning user_id, sku, price
