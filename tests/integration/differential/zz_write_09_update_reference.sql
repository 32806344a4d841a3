update countries set name = upper(name) where code = 'BR'
