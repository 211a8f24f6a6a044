DROP TABLE IF EXISTS api_key;
DROP TABLE IF EXISTS generation_job;
DROP FUNCTION IF EXISTS generation_job_settle_once();
DROP TABLE IF EXISTS generation_run;
