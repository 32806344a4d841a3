select i.id, p.name from order_items i left join products p on p.sku = i.sku where i.id < 200
