-- A fair queue (issue 20). Workers claim jobs in `fair_slot` order (start-time fair queueing):
-- each user's jobs of one source form a flow, and a new job's slot is the later of the queue's
-- virtual time (the smallest slot still queued) and one past the last slot its flow holds. A
-- user who queued 10,000 jobs holds slots far ahead; another user's first job lands at the
-- front. Studio runs (a person waits on the page) share one slot per run and win ties, so they
-- are claimed before bulk API work, also the same user's.
ALTER TABLE generation_run ADD COLUMN source text NOT NULL DEFAULT 'api'
    CONSTRAINT generation_run_source_check CHECK (source IN ('studio', 'api'));

-- The run's owner on each job (for the per-user limits and the flows), and the job's place.
ALTER TABLE generation_job ADD COLUMN user_id uuid REFERENCES app_user (user_id);
ALTER TABLE generation_job ADD COLUMN interactive boolean NOT NULL DEFAULT false;
ALTER TABLE generation_job ADD COLUMN fair_slot bigint NOT NULL DEFAULT 0;

-- Settled jobs never change (generation_job_settle_once); this backfill is an exception.
ALTER TABLE generation_job DISABLE TRIGGER generation_job_settle_once;
UPDATE generation_job j SET user_id = r.user_id FROM generation_run r WHERE r.run_id = j.run_id;
ALTER TABLE generation_job ENABLE TRIGGER generation_job_settle_once;

-- The previous version inserts jobs without an owner during a rolling deploy: take the run's.
CREATE FUNCTION generation_job_fill_user() RETURNS trigger AS $$
BEGIN
    IF NEW.user_id IS NULL THEN
        SELECT user_id INTO NEW.user_id FROM generation_run WHERE run_id = NEW.run_id;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER generation_job_fill_user BEFORE INSERT ON generation_job
    FOR EACH ROW EXECUTE FUNCTION generation_job_fill_user();
ALTER TABLE generation_job ALTER COLUMN user_id SET NOT NULL;

-- The claim walks this index from its start (no scan of the queue); so do the virtual time
-- (its first entry) and a job's position (the entries before it).
CREATE INDEX generation_job_fair_idx ON generation_job (fair_slot, interactive DESC, job_id) WHERE status = 'queued';
-- Per-user counts for the limits, a flow's last slot, the running jobs of a user.
CREATE INDEX generation_job_user_pending_idx ON generation_job (user_id, interactive, status, fair_slot)
    WHERE status IN ('queued', 'running');
-- The oldest queued job (backpressure) and the recent starts of a provider route (estimates).
CREATE INDEX generation_job_queued_age_idx ON generation_job (created_at) WHERE status = 'queued';
CREATE INDEX generation_job_started_idx ON generation_job (provider, started_at) WHERE started_at IS NOT NULL;
