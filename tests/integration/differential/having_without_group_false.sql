select count(*) from orders having count(*) > 100000
