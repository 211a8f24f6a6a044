CREATE INDEX generation_job_run_idx ON generation_job (run_id, position);
CREATE INDEX generation_job_claim_idx ON generation_job (run_after) WHERE status = 'queued';
