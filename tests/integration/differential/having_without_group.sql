select count(*) from orders having count(*) > 10
