-- Two indexes of `generation_job` that nothing reads, each written on every job insert (and
-- the first on every update that is not HOT, three per job):
-- - `generation_job_run_idx (run_id, position)` is the same index as the unique constraint
--   `generation_job_position_unique (run_id, position)`, which serves the same lookups;
-- - `generation_job_claim_idx (run_after) WHERE status = 'queued'` served the FIFO claim; the
--   fair claim walks `generation_job_fair_idx` (`faceoff_claim_job` keeps that plan) and only
--   filters on `run_after`.
DROP INDEX generation_job_run_idx;
DROP INDEX generation_job_claim_idx;
