select id, created from users where created between date '2021-01-01' and date '2021-06-30'
