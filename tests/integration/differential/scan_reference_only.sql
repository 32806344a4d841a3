select * from countries
