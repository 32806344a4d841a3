select country, bool_and(active), bool_or(active) from users group by country
