select name, count(*) from users group by name having name > 'c'
