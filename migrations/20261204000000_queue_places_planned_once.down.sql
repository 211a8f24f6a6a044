ALTER FUNCTION job_queue_places(uuid[], bigint, integer) RESET plan_cache_mode;
