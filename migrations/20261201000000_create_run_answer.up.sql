-- Issue 18, figure 3: `POST /api/v1/runs` answered from the creation statement. Before, the
-- request ran about 12 statements, each its own commit: the idempotency lookup, the creation,
-- then the run, its jobs, its vote and, per job, a count of the queue and the route's start
-- rate read back for the answer. Now the creation statement checks the idempotency key itself
-- (and returns the run it names), returns what the answer needs that only the database knows
-- (the time, the holds, the fair slot) and, when asked, each job's place in its route's queue.
-- The rows written, the locks taken and the checks made are those of 20261130800000: every
-- ledger trigger and constraint checks them as before.

-- The place of each of these jobs that is still queued (the others are left out): how many
-- queued jobs of its provider route are claimed before it (the fair order: `fair_slot`, then
-- studio jobs, then `job_id`; counted up to `p_max`), and the route's recent starts (the
-- latest `p_sample` of the last 5 minutes) with the seconds since the oldest of them, from
-- which `jobs::queue` estimates the start. The queue is counted once per route: the first job
-- of a route in the fair order is counted against the whole queue, each later one adds only the
-- few jobs between the two (the jobs of one run sit at neighbouring slots), so a run's places
-- cost one count of each of its routes, not one per job.
CREATE FUNCTION job_queue_places(p_job_ids uuid[], p_max bigint, p_sample integer)
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

DROP FUNCTION faceoff_create_run(uuid, uuid, text, text, text, bigint, text, text, bigint, bytea, text, text, boolean, smallint[], bigint, timestamptz, timestamptz, jsonb, double precision);

-- Creates a run, its jobs and one hold per job (`job:{job_id}:hold`), and wakes the workers, or
-- nothing. The idempotency key is checked first: a key the user already used answers
-- 'key_used' with that run and the fingerprint of its request (the caller replays it or
-- reports the conflict), before any other check, so a retry gets its run even once the wallet
-- or the queue would refuse a new one. Then, under the user's queue lock (the advisory lock
-- `jobs::queue::lock_user` takes): the user's queued jobs of the run's source plus the new ones
-- must stay within `p_max_queued` ('too_many_jobs'), the wallet must cover `p_total`
-- ('insufficient_credits'); and an API run is refused while the oldest queued job has waited
-- more than `p_max_age` seconds ('busy', with how long in `waited`; NULL: no such limit).
-- `p_jobs` is a JSON array of the jobs in position order; each gets its place in the fair queue
-- as `jobs::queue::next_slot` computes it (a studio run's jobs share one slot).
-- Returns the outcome, the user's queued jobs of the source before the run, the wallet's
-- balance before it and whether the user has a webhook endpoint (for `credits.low`); for a
-- created run also its creation time, the first fair slot and the hold ids (in position order),
-- and, when `p_place_limit` is not NULL, the jobs' places (`job_queue_places` with that limit
-- and `p_rate_sample`, in the arrays `place_*`).
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
    p_place_limit   bigint,
    p_rate_sample   integer,
    OUT outcome              text,
    OUT queued               bigint,
    OUT balance              bigint,
    OUT webhooks             boolean,
    OUT waited               double precision,
    OUT existing_run         uuid,
    OUT existing_fingerprint bytea,
    OUT run_created_at       timestamptz,
    OUT first_slot           bigint,
    OUT hold_ids             bigint[],
    OUT place_job_ids        uuid[],
    OUT place_ahead          bigint[],
    OUT place_started        bigint[],
    OUT place_span           double precision[]
) AS $$
DECLARE
    v_interactive boolean := p_source = 'studio';
    v_count       int := jsonb_array_length(p_jobs);
BEGIN
    SELECT r.run_id, r.request_fingerprint INTO existing_run, existing_fingerprint
      FROM generation_run r WHERE r.user_id = p_user AND r.idempotency_key = p_key;
    IF FOUND THEN
        outcome := 'key_used';
        RETURN;
    END IF;
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
      INTO first_slot;
    INSERT INTO generation_run (run_id, user_id, prompt, mode, aspect_ratio, seed, reference_key, idempotency_key,
                                total_price, request_fingerprint, source, use_case, blind, shown_order)
    VALUES (p_run_id, p_user, p_prompt, p_mode, p_aspect_ratio, p_seed, p_reference_key, p_key,
            p_total, p_fingerprint, p_source, p_use_case, p_blind, p_shown_order)
    ON CONFLICT ON CONSTRAINT generation_run_user_key_unique DO NOTHING
    RETURNING created_at INTO run_created_at;
    IF NOT FOUND THEN
        -- A concurrent submission with the same key committed first.
        SELECT r.run_id, r.request_fingerprint INTO existing_run, existing_fingerprint
          FROM generation_run r WHERE r.user_id = p_user AND r.idempotency_key = p_key;
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
      INTO hold_ids
      FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS e(j, n);
    IF hold_ids IS NULL THEN
        -- The balance was read under the queue lock but not the wallet's: a concurrent spend
        -- (another source's run, a top-up refund) got there first. Undo the run row.
        RAISE EXCEPTION 'insufficient credits' USING ERRCODE = 'P0001', HINT = 'faceoff:insufficient_credits';
    END IF;
    INSERT INTO generation_job (job_id, run_id, position, model_slug, model_name, variant_slug, variant_name,
                                variant_is_default, provider, endpoint, width, height, price, hold_id, deadline,
                                user_id, interactive, fair_slot, routes, usage_markup)
    SELECT (j ->> 'job_id')::uuid, p_run_id, (n - 1)::smallint, j ->> 'model_slug', j ->> 'model_name',
           j ->> 'variant_slug', j ->> 'variant_name', (j ->> 'variant_is_default')::boolean, j ->> 'provider',
           j ->> 'endpoint', (j ->> 'width')::int, (j ->> 'height')::int, (j ->> 'price')::bigint, hold_ids[n],
           p_deadline, p_user, v_interactive,
           CASE WHEN v_interactive THEN first_slot ELSE first_slot + n - 1 END,
           ARRAY(SELECT jsonb_array_elements_text(j -> 'routes')), (j ->> 'usage_markup')::real
      FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS e(j, n);
    IF p_place_limit IS NOT NULL THEN
        SELECT array_agg(p.job_id), array_agg(p.ahead), array_agg(p.started), array_agg(COALESCE(p.span, 0))
          INTO place_job_ids, place_ahead, place_started, place_span
          FROM job_queue_places(
                   ARRAY(SELECT (j ->> 'job_id')::uuid FROM jsonb_array_elements(p_jobs) AS e(j)),
                   p_place_limit, p_rate_sample) p;
    END IF;
    PERFORM pg_notify('faceoff_job_queued', '');
    outcome := 'created';
END;
$$ LANGUAGE plpgsql;
