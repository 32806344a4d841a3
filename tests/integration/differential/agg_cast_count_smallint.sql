select count(*)::smallint from order_items where qty = 1
