-- error: 0A000
select p.sku, i.id from order_items i right join products p on i.sku = p.sku
