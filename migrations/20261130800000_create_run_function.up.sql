-- Issue 18: a run is created in one statement. Before, a two-model run took about 30 round
-- trips (per hold: savepoint, wallet lookup, system-account lookup, nested savepoint, transfer,
-- wallet update, two entries, the hold row, releases) and run submission reached 0.15 of
-- pgbench's TPC-B rate on the same server. The two functions below write exactly the rows the
-- Rust code wrote (the same transfers, entries, holds, run and jobs), so every ledger trigger and
-- constraint (balanced transfers, the wallet's balance chain, holds matching their reserve
-- transfer, no negative wallet, unique idempotency keys) checks them as before.

-- Reserves one hold per element of the arrays on a user's wallet, all or nothing: when the
-- wallet cannot cover their sum nothing is written and NULL is returned; otherwise the hold ids,
-- in order. The wallet row is locked first (`FOR NO KEY UPDATE`, the lock an UPDATE takes), so
-- the check and the debits see one balance. Each key must be new (the run's jobs are): a used
-- key is a unique violation, not a replay (`ledger::reserve` replays; this is for new runs).
CREATE FUNCTION ledger_reserve_holds(
    p_user     uuid,
    p_amounts  bigint[],
    p_keys     text[],
    p_memos    text[],
    p_run_id   uuid,
    p_job_ids  uuid[],
    p_deadline timestamptz
) RETURNS bigint[] AS $$
DECLARE
    v_wallet   bigint;
    v_pending  bigint;
    v_balance  bigint;
    v_transfer bigint;
    v_hold     bigint;
    v_holds    bigint[] := '{}';
    i          int;
BEGIN
    SELECT account_id, balance INTO v_wallet, v_balance FROM ledger_account
     WHERE user_id = p_user FOR NO KEY UPDATE;
    IF v_wallet IS NULL THEN
        RAISE EXCEPTION 'no wallet for user %', p_user USING ERRCODE = 'no_data_found';
    END IF;
    IF v_balance < (SELECT COALESCE(sum(a), 0) FROM unnest(p_amounts) a) THEN
        RETURN NULL;
    END IF;
    SELECT account_id INTO STRICT v_pending FROM ledger_account WHERE code = 'pending_holds';
    FOR i IN 1 .. COALESCE(array_length(p_amounts, 1), 0) LOOP
        INSERT INTO ledger_transfer (idempotency_key, debit_account_id, credit_account_id, amount, kind, memo, run_id, job_id)
        VALUES (p_keys[i], v_wallet, v_pending, p_amounts[i], 'hold', p_memos[i], p_run_id, p_job_ids[i])
        RETURNING transfer_id INTO v_transfer;
        UPDATE ledger_account SET balance = balance - p_amounts[i] WHERE account_id = v_wallet
        RETURNING balance INTO v_balance;
        INSERT INTO ledger_entry (transfer_id, account_id, amount, balance_after)
        VALUES (v_transfer, v_wallet, -p_amounts[i], v_balance);
        INSERT INTO ledger_entry (transfer_id, account_id, amount, balance_after)
        VALUES (v_transfer, v_pending, p_amounts[i], NULL);
        INSERT INTO ledger_hold (account_id, amount, idempotency_key, reserve_transfer_id, deadline)
        VALUES (v_wallet, p_amounts[i], p_keys[i], v_transfer, p_deadline)
        RETURNING hold_id INTO v_hold;
        v_holds := v_holds || v_hold;
    END LOOP;
    RETURN v_holds;
END;
$$ LANGUAGE plpgsql;

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
