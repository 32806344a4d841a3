select tags, count(*) from metrics group by tags
