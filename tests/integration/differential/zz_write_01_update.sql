update orders set qty = qty + 1 where status = 'new'
