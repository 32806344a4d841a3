select id, score::text as s, created::text as d from users where score > 500
