-- The places as 20261201000000 counted them.
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
            SELECT count(*) INTO v_ahead FROM (
                SELECT 1 FROM generation_job q
                 WHERE q.status = 'queued' AND q.fair_slot <= j.fair_slot AND q.provider = j.provider
                   AND (q.fair_slot < j.fair_slot OR (q.interactive AND NOT j.interactive)
                        OR (q.interactive = j.interactive AND q.job_id < j.job_id))
                 LIMIT p_max) a;
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

DROP FUNCTION job_queue_ahead(text, bigint, boolean, uuid, bigint);
