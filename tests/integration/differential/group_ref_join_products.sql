select p.name, count(*), sum(i.qty) from order_items i join products p on p.sku = i.sku group by p.name
