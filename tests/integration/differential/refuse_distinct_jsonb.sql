-- error: 0A000
select distinct doc from metrics
