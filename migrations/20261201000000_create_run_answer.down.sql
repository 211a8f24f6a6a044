-- Back to the creation function of 20261130800000 (no places, no replay answer).
DROP FUNCTION IF EXISTS faceoff_create_run(uuid, uuid, text, text, text, bigint, text, text, bigint, bytea, text, text, boolean, smallint[], bigint, timestamptz, timestamptz, jsonb, double precision, bigint, integer);
DROP FUNCTION IF EXISTS job_queue_places(uuid[], bigint, integer);

-- Creates a run, its jobs and one hold per job (`job:{job_id}:hold`), and wakes the workers, or
-- nothing. Under the user's queue lock (the advisory lock `jobs::queue::lock_user` takes): the
-- user's queued jobs of the run's source plus the new ones must stay within `p_max_queued`
-- ('too_many_jobs'), the wallet must cover `p_total` ('insufficient_credits'), and the
-- idempotency key must be new ('key_used': the caller replays or reports the conflict); and an
-- API run is refused while the oldest queued job has waited more than `p_max_age` seconds
-- ('busy', with how long in `waited`; NULL: no such limit).
-- `p_jobs` is a JSON array of the jobs in position order; each gets its place in the fair queue
-- as `jobs::queue::next_slot` computes it (a studio run's jobs share one slot).
-- Returns the outcome, the user's queued jobs of the source before the run, the wallet's
-- balance before it and whether the user has a webhook endpoint (for `credits.low`).
CREATE FUNCTION faceoff_create_run(
    p_run_id        uuid,
    p_user          uuid,
    p_prompt        text,
    p_mode          text,
    p_aspect_ratio  text,
    p_seed          bigint,
    p_reference_key text,
    p_key           text,
    p_total         bigint,
    p_fingerprint   bytea,
    p_source        text,
    p_use_case      text,
    p_blind         boolean,
    p_shown_order   smallint[],
    p_max_queued    bigint,
    p_deadline      timestamptz,
    p_hold_deadline timestamptz,
    p_jobs          jsonb,
    p_max_age       double precision,
    OUT outcome     text,
    OUT queued      bigint,
    OUT balance     bigint,
    OUT webhooks    boolean,
    OUT waited      double precision
) AS $$
DECLARE
    v_interactive boolean := p_source = 'studio';
    v_count       int := jsonb_array_length(p_jobs);
    v_slot        bigint;
    v_holds       bigint[];
BEGIN
    -- The whole queue backed up: new API runs are refused for now ('busy').
    IF p_source = 'api' AND p_max_age IS NOT NULL THEN
        SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 INTO waited
          FROM generation_job WHERE status = 'queued';
        IF waited > p_max_age THEN
            outcome := 'busy';
            RETURN;
        END IF;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('faceoff:queue:' || p_user::text, 0));
    SELECT count(*) INTO queued FROM generation_job
     WHERE user_id = p_user AND interactive = v_interactive AND status = 'queued';
    SELECT a.balance INTO balance FROM ledger_account a WHERE a.user_id = p_user;
    webhooks := EXISTS (SELECT 1 FROM webhook_endpoint w WHERE w.user_id = p_user);
    IF queued + v_count > p_max_queued THEN
        outcome := 'too_many_jobs';
        RETURN;
    END IF;
    IF balance IS NULL OR balance < p_total THEN
        outcome := 'insufficient_credits';
        RETURN;
    END IF;
    SELECT GREATEST(
               COALESCE((SELECT min(fair_slot) FROM generation_job WHERE status = 'queued'),
                        (SELECT max(fair_slot) FROM generation_job WHERE status = 'running'), 0),
               COALESCE((SELECT max(fair_slot) + 1 FROM generation_job
                          WHERE user_id = p_user AND interactive = v_interactive AND status = 'queued'), 0))
      INTO v_slot;
    INSERT INTO generation_run (run_id, user_id, prompt, mode, aspect_ratio, seed, reference_key, idempotency_key,
                                total_price, request_fingerprint, source, use_case, blind, shown_order)
    VALUES (p_run_id, p_user, p_prompt, p_mode, p_aspect_ratio, p_seed, p_reference_key, p_key,
            p_total, p_fingerprint, p_source, p_use_case, p_blind, p_shown_order)
    ON CONFLICT ON CONSTRAINT generation_run_user_key_unique DO NOTHING;
    IF NOT FOUND THEN
        outcome := 'key_used';
        RETURN;
    END IF;
    SELECT ledger_reserve_holds(
               p_user,
               array_agg((j ->> 'price')::bigint ORDER BY n),
               array_agg('job:' || (j ->> 'job_id') || ':hold' ORDER BY n),
               array_agg(j ->> 'memo' ORDER BY n),
               p_run_id,
               array_agg((j ->> 'job_id')::uuid ORDER BY n),
               p_hold_deadline)
      INTO v_holds
      FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS e(j, n);
    IF v_holds IS NULL THEN
        -- The balance was read under the queue lock but not the wallet's: a concurrent spend
        -- (another source's run, a top-up refund) got there first. Undo the run row.
        RAISE EXCEPTION 'insufficient credits' USING ERRCODE = 'P0001', HINT = 'faceoff:insufficient_credits';
    END IF;
    INSERT INTO generation_job (job_id, run_id, position, model_slug, model_name, variant_slug, variant_name,
                                variant_is_default, provider, endpoint, width, height, price, hold_id, deadline,
                                user_id, interactive, fair_slot, routes, usage_markup)
    SELECT (j ->> 'job_id')::uuid, p_run_id, (n - 1)::smallint, j ->> 'model_slug', j ->> 'model_name',
           j ->> 'variant_slug', j ->> 'variant_name', (j ->> 'variant_is_default')::boolean, j ->> 'provider',
           j ->> 'endpoint', (j ->> 'width')::int, (j ->> 'height')::int, (j ->> 'price')::bigint, v_holds[n],
           p_deadline, p_user, v_interactive,
           CASE WHEN v_interactive THEN v_slot ELSE v_slot + n - 1 END,
           ARRAY(SELECT jsonb_array_elements_text(j -> 'routes')), (j ->> 'usage_markup')::real
      FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS e(j, n);
    PERFORM pg_notify('faceoff_job_queued', '');
    outcome := 'created';
END;
$$ LANGUAGE plpgsql;
