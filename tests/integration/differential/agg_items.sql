select sum(price * qty), count(*) from order_items
