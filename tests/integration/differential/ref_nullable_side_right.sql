select i.id, p.name from products p right join order_items i on p.sku = i.sku where i.id < 100
