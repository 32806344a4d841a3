-- error: 0A000
-- "und-x-icu" may be any collation: pgshard cannot tell whether it is deterministic.
select count(*) from users group by name collate "und-x-icu"
