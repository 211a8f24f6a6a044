DROP FUNCTION rate_limit_hit(text, bigint, integer);
DROP TABLE rate_limit_failure;
DROP TABLE rate_limit_bucket;
