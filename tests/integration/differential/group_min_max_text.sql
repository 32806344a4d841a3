select status, min(note), max(note) from orders group by status
