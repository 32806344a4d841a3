select active, count(*), min(created), max(created) from users group by active
