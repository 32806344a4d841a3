select nope from users order by id
