select user_id, span, count(*) from metrics group by user_id, span
