-- Issue 18, figure 3: the queue's statements in a run's creation cost the same with 10 or
-- 10,000 jobs queued. Measured with 5,000 queued (auto_explain of every nested statement):
-- - counting the jobs ahead of a new API job, capped at `p_max`, was a bitmap scan of the fair
--   index that collected every queued entry before the LIMIT saw one (about half of PostgreSQL's
--   time per run);
-- - the queue's plans are made from statistics that a queue never has: it grows by hundreds of
--   rows a second, and PL/pgSQL keeps a function's plans for the life of the connection, so
--   plans made while the queue was small (or before it backed up, when 'queued' was a rare
--   status) stay. Taking such a plan, the head of the queue, the user's last slot, the user's
--   queued count, the oldest queued job and the lookup of the new jobs by id each read every
--   queued row (through whichever partial index looked smallest, or a sequential scan), and
--   which plan a connection kept changed from run to run (the same benchmark gave 240 to 430
--   runs/s).
-- Each statement is now written so that the index it needs is the only plan without a disabled
-- step: orders that only that index gives (`ORDER BY … LIMIT`), lookups by primary key without
-- the status (which would let a partial index compete), the user's pending jobs through the
-- predicate only `generation_job_user_pending_idx` has; and the functions turn off sequential
-- scans, sorts and bitmap scans for themselves, as the claim turns off sorts (20261201060000).
-- JIT is off for them too: a plan with a disabled step costs more than `jit_above_cost`, and
-- compiling it took 125 ms. Past `p_max` jobs ahead the count stops (`jobs::queue::MAX_COUNTED`,
-- 1,000: "1,000 or more jobs ahead").

-- Where a new job of a user's flow goes (`jobs::queue::next_slot`): the later of the queue's
-- virtual time (the head of the fair order, or the last running slot when nothing is queued)
-- and one past the flow's last queued slot; and how many jobs the flow has queued. The flow's
-- jobs are read through `generation_job_user_pending_idx` (queued and running: the one index
-- whose predicate `status IN ('queued', 'running')` is), so they cost what the user has pending
-- (at most the per-user limits), never the whole queue.
CREATE FUNCTION job_queue_next_slot(p_user uuid, p_interactive boolean, OUT slot bigint, OUT queued bigint) AS $$
DECLARE
    v_last bigint;
BEGIN
    SELECT count(*) FILTER (WHERE p.status = 'queued'), max(p.fair_slot) FILTER (WHERE p.status = 'queued')
      INTO queued, v_last
      FROM generation_job p
     WHERE p.user_id = p_user AND p.interactive = p_interactive AND p.status IN ('queued', 'running');
    slot := GREATEST(
        COALESCE((SELECT q.fair_slot FROM generation_job q WHERE q.status = 'queued'
                   ORDER BY q.fair_slot, q.interactive DESC, q.job_id LIMIT 1),
                 (SELECT max(r.fair_slot) FROM generation_job r WHERE r.status = 'running'), 0),
        COALESCE(v_last + 1, 0));
END;
$$ LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_sort = off SET enable_bitmapscan = off SET jit = off;

-- Queued jobs (of `p_provider`, or of every route when NULL) claimed before a job at `p_slot`
-- (the fair order: `fair_slot`, then studio jobs, then `job_id`), counted up to `p_max`: the
-- first `p_max` entries of `generation_job_fair_idx` at most.
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
$$ LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_sort = off SET enable_bitmapscan = off SET jit = off;

-- As in 20261201000000: the places of those of `p_job_ids` that are queued, each route's queue
-- counted once (`job_queue_ahead` for its first job, the few slots between for the others).
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
    FOR j IN WITH given AS MATERIALIZED (
                  SELECT g.job_id, g.provider, g.fair_slot, g.interactive, g.status FROM generation_job g
                   WHERE g.job_id = ANY (p_job_ids))
              SELECT * FROM given g ORDER BY g.provider, g.fair_slot, g.interactive DESC, g.job_id
    LOOP
        CONTINUE WHEN j.status <> 'queued';
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
            SELECT v_ahead + count(*) INTO ahead FROM (
                SELECT 1 FROM generation_job q
                 WHERE q.status = 'queued' AND q.provider = j.provider
                   AND q.fair_slot BETWEEN v_slot AND j.fair_slot
                   AND (q.fair_slot < j.fair_slot OR (q.interactive AND NOT j.interactive)
                        OR (q.interactive = j.interactive AND q.job_id < j.job_id))
                   AND NOT (q.fair_slot = v_slot AND ((q.interactive AND NOT v_interactive)
                                                      OR (q.interactive = v_interactive AND q.job_id < v_job)))
                 ORDER BY q.fair_slot, q.interactive DESC, q.job_id
                 LIMIT p_max) b;
            ahead := LEAST(ahead, p_max);
        END IF;
        job_id := j.job_id;
        RETURN NEXT;
    END LOOP;
END;
$$ LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_sort = off SET enable_bitmapscan = off SET jit = off;

-- As in 20261201000000, with the slot from `job_queue_next_slot`, the oldest queued job read
-- from the first entry of `generation_job_queued_age_idx`, and the planner settings above.
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
    v_slot        bigint;
BEGIN
    SELECT r.run_id, r.request_fingerprint INTO existing_run, existing_fingerprint
      FROM generation_run r WHERE r.user_id = p_user AND r.idempotency_key = p_key;
    IF FOUND THEN
        outcome := 'key_used';
        RETURN;
    END IF;
    -- The whole queue backed up: new API runs are refused for now ('busy').
    IF p_source = 'api' AND p_max_age IS NOT NULL THEN
        waited := COALESCE((SELECT EXTRACT(EPOCH FROM now() - created_at)::float8 FROM generation_job
                             WHERE status = 'queued' ORDER BY created_at LIMIT 1), 0);
        IF waited > p_max_age THEN
            outcome := 'busy';
            RETURN;
        END IF;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('faceoff:queue:' || p_user::text, 0));
    SELECT s.slot, s.queued INTO v_slot, queued FROM job_queue_next_slot(p_user, v_interactive) s;
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
    first_slot := v_slot;
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
$$ LANGUAGE plpgsql SET enable_seqscan = off SET enable_sort = off SET enable_bitmapscan = off SET jit = off;
