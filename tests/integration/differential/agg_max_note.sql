select max(note), min(note) from orders
