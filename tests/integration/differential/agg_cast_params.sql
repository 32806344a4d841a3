-- params: paid
select sum(amount)::numeric as total, count(amount)::integer from orders where status = $1
