select user_id, doc, count(*) from metrics group by user_id, doc
