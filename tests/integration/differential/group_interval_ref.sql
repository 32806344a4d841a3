select count(*) from products group by shelf
