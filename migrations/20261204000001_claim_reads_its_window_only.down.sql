-- As in 20261201070000_claim_job_returns_run: the window joined in the table's order.
CREATE OR REPLACE FUNCTION faceoff_claim_job(p_token uuid, p_lease double precision, p_skip text[], p_studio bigint, p_api bigint, p_window bigint)
 RETURNS TABLE(job_id uuid, run_id uuid, user_id uuid, model_slug text, model_name text, variant_slug text, variant_name text, variant_is_default boolean, provider text, routes text[], route text, usage_markup real, endpoint text, width integer, height integer, price bigint, hold_id bigint, deadline timestamp with time zone, attempts integer, lease_token uuid, provider_impl text, submission jsonb, prompt text, seed bigint, mode text, aspect_ratio text, reference_key text, blind boolean)
 LANGUAGE plpgsql
 SET enable_sort TO 'off'
AS $$
#variable_conflict use_column
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
    SELECT c.job_id, c.run_id, r.user_id, c.model_slug, c.model_name, c.variant_slug, c.variant_name,
           c.variant_is_default, c.provider, c.routes, c.route, c.usage_markup, c.endpoint, c.width, c.height,
           c.price, c.hold_id, c.deadline, c.attempts, c.lease_token, c.provider_impl, c.submission,
           r.prompt, r.seed, r.mode, r.aspect_ratio, r.reference_key, r.blind
    FROM claimed c JOIN generation_run r ON r.run_id = c.run_id;
END;
$$;
