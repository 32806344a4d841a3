select distinct user_id, doc from metrics
