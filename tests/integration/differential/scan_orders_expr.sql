select id, amount * qty as total from orders where status = 'paid'
