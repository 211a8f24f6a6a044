-- Back to 20261201060000_claim_job_function: the claimed job row alone (the caller joins the run).
DROP FUNCTION faceoff_claim_job(uuid, double precision, text[], bigint, bigint, bigint);

CREATE FUNCTION faceoff_claim_job(
    p_token  uuid,
    p_lease  double precision,
    p_skip   text[],
    p_studio bigint,
    p_api    bigint,
    p_window bigint
) RETURNS SETOF generation_job AS $$
BEGIN
    RETURN QUERY
    WITH expired AS (
        SELECT job_id FROM generation_job
        WHERE status = 'running' AND lease_expires_at < now() AND NOT (provider = ANY(p_skip))
        ORDER BY lease_expires_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), head AS (
        SELECT job_id, user_id, interactive FROM generation_job
        WHERE status = 'queued' AND run_after <= now() AND NOT (provider = ANY(p_skip))
        ORDER BY fair_slot, interactive DESC, job_id
        LIMIT p_window
    ), queued AS (
        SELECT j.job_id FROM generation_job j JOIN head h ON h.job_id = j.job_id
        WHERE NOT EXISTS (SELECT 1 FROM expired)
          AND j.status = 'queued'
          AND (SELECT count(*) FROM generation_job r
               WHERE r.user_id = h.user_id AND r.interactive = h.interactive AND r.status = 'running')
              < CASE WHEN h.interactive THEN p_studio ELSE p_api END
        ORDER BY j.fair_slot, j.interactive DESC, j.job_id
        LIMIT 1
        FOR UPDATE OF j SKIP LOCKED
    ), next AS (
        SELECT job_id FROM expired UNION ALL SELECT job_id FROM queued
    ), claimed AS (
        UPDATE generation_job j
        SET status = 'running', attempts = j.attempts + 1, lease_token = p_token,
            lease_expires_at = now() + make_interval(secs => p_lease), started_at = COALESCE(j.started_at, now())
        FROM next WHERE j.job_id = next.job_id
        RETURNING j.*
    )
    SELECT * FROM claimed;
END;
$$ LANGUAGE plpgsql SET enable_sort = off;
