select p.sku, c.name from products p left join countries c on c.code = p.sku
