select i.id, p.name, p.price from order_items i join products p on p.sku = i.sku where i.qty = 2
