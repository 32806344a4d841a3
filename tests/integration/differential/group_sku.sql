select sku, sum(qty), avg(price) from order_items group by sku
