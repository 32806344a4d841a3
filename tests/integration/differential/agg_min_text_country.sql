select min(country), max(country) from users
