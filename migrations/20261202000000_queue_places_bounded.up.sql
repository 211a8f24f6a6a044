-- Issue 18, figure 3: a job's place in the queue costs at most `p_max` index entries, whatever
-- the queue's depth. Counting the jobs ahead of a new API job was the largest part of a run's
-- creation (about half of PostgreSQL's time per run with 5,000 jobs queued): the count's plan
-- (a generic plan, from statistics that a queue growing by hundreds of rows a second never has)
-- was a bitmap scan of `generation_job_fair_idx`, which collects every queued entry before the
-- sort and the LIMIT see one, so the limit bounded nothing. `job_queue_ahead` walks the index in
-- the fair order and stops at the limit: bitmap scans are off for it, as sorts are for the
-- claim. The Rust side lowers the limit to 1,000 (`jobs::queue::MAX_COUNTED`) and says "1,000 or more
-- jobs ahead" there.

-- Queued jobs (of `p_provider`, or of every route when NULL) claimed before a job at `p_slot`
-- (the fair order: `fair_slot`, then studio jobs, then `job_id`), counted up to `p_max`.
CREATE FUNCTION job_queue_ahead(p_provider text, p_slot bigint, p_interactive boolean, p_job uuid, p_max bigint)
RETURNS bigint AS $$
BEGIN
    RETURN (SELECT count(*) FROM (
        SELECT 1 FROM generation_job q
         WHERE q.status = 'queued' AND q.fair_slot <= p_slot
           AND (q.fair_slot < p_slot OR (q.interactive AND NOT p_interactive)
                OR (q.interactive = p_interactive AND q.job_id < p_job))
           AND (p_provider IS NULL OR q.provider = p_provider)
         ORDER BY q.fair_slot, q.interactive DESC, q.job_id
         LIMIT p_max) a);
END;
$$ LANGUAGE plpgsql STABLE SET enable_bitmapscan = off;

-- As in 20261201000000, with the first count of each route by `job_queue_ahead`.
CREATE OR REPLACE FUNCTION job_queue_places(p_job_ids uuid[], p_max bigint, p_sample integer)
RETURNS TABLE (job_id uuid, ahead bigint, started bigint, span double precision) AS $$
DECLARE
    j             record;
    v_provider    text;
    v_slot        bigint;
    v_interactive boolean;
    v_job         uuid;
    v_ahead       bigint;
BEGIN
    FOR j IN SELECT g.job_id, g.provider, g.fair_slot, g.interactive FROM generation_job g
              WHERE g.job_id = ANY (p_job_ids) AND g.status = 'queued'
              ORDER BY g.provider, g.fair_slot, g.interactive DESC, g.job_id
    LOOP
        IF v_provider IS NULL OR v_provider <> j.provider THEN
            v_provider := j.provider;
            v_slot := j.fair_slot;
            v_interactive := j.interactive;
            v_job := j.job_id;
            v_ahead := job_queue_ahead(j.provider, j.fair_slot, j.interactive, j.job_id, p_max);
            SELECT count(*), EXTRACT(EPOCH FROM now() - min(s.started_at))::float8 INTO started, span FROM (
                SELECT g.started_at FROM generation_job g
                 WHERE g.provider = j.provider AND g.started_at > now() - interval '5 minutes'
                 ORDER BY g.provider DESC, g.started_at DESC LIMIT p_sample) s;
            ahead := v_ahead;
        ELSE
            -- Claimed before this job but not before the route's first one.
            SELECT v_ahead + count(*) INTO ahead FROM generation_job q
             WHERE q.status = 'queued' AND q.provider = j.provider
               AND q.fair_slot BETWEEN v_slot AND j.fair_slot
               AND (q.fair_slot < j.fair_slot OR (q.interactive AND NOT j.interactive)
                    OR (q.interactive = j.interactive AND q.job_id < j.job_id))
               AND NOT (q.fair_slot = v_slot AND ((q.interactive AND NOT v_interactive)
                                                  OR (q.interactive = v_interactive AND q.job_id < v_job)));
            ahead := LEAST(ahead, p_max);
        END IF;
        job_id := j.job_id;
        RETURN NEXT;
    END LOOP;
END;
$$ LANGUAGE plpgsql STABLE;
