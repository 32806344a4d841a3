select id, status from orders where status in ('new', 'cancelled') and qty = 3
