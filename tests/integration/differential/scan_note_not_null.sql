select id, note from orders where note is not null
