select id, count(*) from users group by id, name collate "und-x-icu"
