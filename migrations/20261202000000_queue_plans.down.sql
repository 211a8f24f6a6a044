-- The queue's functions as 20261201000000 made them.
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

CREATE OR REPLACE FUNCTION faceoff_create_run(
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

DROP FUNCTION job_queue_ahead(text, bigint, boolean, uuid, bigint);
DROP FUNCTION job_queue_next_slot(uuid, boolean);
