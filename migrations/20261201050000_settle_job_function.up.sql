-- Issue 18, figure 4b (the queue): a job is settled in one statement. Before, settling a
-- delivered job took about 17 round trips (the fenced row lock, a savepoint, the hold's row
-- lock, two system-account lookups, a nested savepoint, the transfer, the wallet lookup, two
-- entries, the hold update, releases, the job update, the webhook lookup, NOTIFY) and its
-- image's two `media_object` rows two more commits. The functions below write exactly the rows
-- `ledger::resolve` and `jobs::settle` wrote (the same transfers under the same idempotency
-- keys, entries, hold update, media rows, job update), so every ledger trigger and constraint
-- (balanced transfers, the wallet's balance chain, a hold resolved once, settled jobs never
-- change) checks them as before. `ledger::post` and `ledger::void` stay for everything else.

-- One transfer of a hold's resolution (`ledger::transfer`): under a new idempotency key it
-- writes the transfer, updates the user wallet on either side (locked in account-id order) and
-- writes both entries; an existing key with the same accounts, amount and kind is a replay that
-- writes nothing, any other is a key conflict.
CREATE FUNCTION ledger_hold_transfer(
    p_key    text,
    p_debit  bigint,
    p_credit bigint,
    p_amount bigint,
    p_kind   text,
    p_memo   text,
    p_hold   bigint,
    p_run_id uuid,
    p_job_id uuid
) RETURNS void AS $$
DECLARE
    v_transfer bigint;
    v_existing ledger_transfer%ROWTYPE;
    v_side     record;
    v_after    bigint;
BEGIN
    INSERT INTO ledger_transfer (idempotency_key, debit_account_id, credit_account_id, amount, kind, memo, hold_id, run_id, job_id)
    VALUES (p_key, p_debit, p_credit, p_amount, p_kind, p_memo, p_hold, p_run_id, p_job_id)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING transfer_id INTO v_transfer;
    IF v_transfer IS NULL THEN
        SELECT * INTO STRICT v_existing FROM ledger_transfer WHERE idempotency_key = p_key;
        IF (v_existing.debit_account_id, v_existing.credit_account_id, v_existing.amount, v_existing.kind)
           IS DISTINCT FROM (p_debit, p_credit, p_amount, p_kind) THEN
            RAISE EXCEPTION 'idempotency key % was used for another transfer', p_key
                USING ERRCODE = 'P0001', HINT = 'faceoff:key_conflict';
        END IF;
        RETURN;
    END IF;
    FOR v_side IN
        SELECT a.account_id, a.kind, CASE WHEN a.account_id = p_debit THEN -p_amount ELSE p_amount END AS delta
          FROM ledger_account a WHERE a.account_id IN (p_debit, p_credit) ORDER BY a.account_id
    LOOP
        v_after := NULL;
        IF v_side.kind = 'user' THEN
            UPDATE ledger_account SET balance = balance + v_side.delta
             WHERE account_id = v_side.account_id AND balance + v_side.delta >= 0
            RETURNING balance INTO v_after;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'insufficient credits' USING ERRCODE = 'P0001', HINT = 'faceoff:insufficient_credits';
            END IF;
        END IF;
        INSERT INTO ledger_entry (transfer_id, account_id, amount, balance_after)
        VALUES (v_transfer, v_side.account_id, v_side.delta, v_after);
    END LOOP;
END;
$$ LANGUAGE plpgsql;

-- Resolves a hold (`ledger::resolve`): posts `p_charge` of it to generation revenue and releases
-- the rest to the wallet, or voids it all when `p_charge` is NULL. Returns 'resolved';
-- 'replayed' when the hold was already resolved the same way; 'posted' or 'voided' when it was
-- resolved the other way (or posted another amount), changing nothing. The hold's row lock
-- makes concurrent resolutions take turns.
CREATE FUNCTION ledger_resolve_hold(
    p_hold   bigint,
    p_charge bigint,
    p_memo   text,
    p_run_id uuid,
    p_job_id uuid
) RETURNS text AS $$
DECLARE
    v_hold    ledger_hold%ROWTYPE;
    v_charge  bigint := COALESCE(p_charge, 0);
    v_pending bigint;
    v_revenue bigint;
BEGIN
    IF v_charge < 0 THEN
        RAISE EXCEPTION 'invalid amount %', p_charge USING ERRCODE = 'P0001', HINT = 'faceoff:invalid_amount';
    END IF;
    SELECT * INTO v_hold FROM ledger_hold WHERE hold_id = p_hold FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold % not found', p_hold USING ERRCODE = 'P0001', HINT = 'faceoff:hold_not_found';
    END IF;
    IF v_hold.status <> 'pending' THEN
        IF (p_charge IS NULL AND v_hold.status = 'voided')
           OR (p_charge IS NOT NULL AND v_hold.status = 'posted' AND v_hold.posted_amount = p_charge) THEN
            RETURN 'replayed';
        END IF;
        RETURN v_hold.status;
    END IF;
    IF v_charge > v_hold.amount THEN
        RAISE EXCEPTION 'cannot post % of a hold of %', v_charge, v_hold.amount
            USING ERRCODE = 'P0001', HINT = 'faceoff:exceeds_hold';
    END IF;
    SELECT account_id INTO STRICT v_pending FROM ledger_account WHERE code = 'pending_holds';
    IF v_charge > 0 THEN
        SELECT account_id INTO STRICT v_revenue FROM ledger_account WHERE code = 'generation_revenue';
        PERFORM ledger_hold_transfer('hold:' || p_hold || ':post', v_pending, v_revenue, v_charge, 'hold_post',
                                     p_memo, p_hold, p_run_id, p_job_id);
    END IF;
    IF v_hold.amount - v_charge > 0 THEN
        PERFORM ledger_hold_transfer('hold:' || p_hold || ':release', v_pending, v_hold.account_id,
                                     v_hold.amount - v_charge, 'hold_release', p_memo, p_hold, p_run_id, p_job_id);
    END IF;
    UPDATE ledger_hold
       SET status = CASE WHEN p_charge IS NULL THEN 'voided' ELSE 'posted' END, posted_amount = p_charge,
           resolved_at = now(), reason = NULLIF(p_memo, '')
     WHERE hold_id = p_hold AND status = 'pending';
    RETURN 'resolved';
END;
$$ LANGUAGE plpgsql;

-- Settles a job exactly once (`jobs::settle`), fenced by its lease token: 'lost_lease' (nothing
-- changed) unless the job is running under `p_lease`. Otherwise records the delivered image's
-- objects (`p_media`: a JSON array of {key, content_type, byte_size, width, height}, owned by
-- the job's user; a key already recorded keeps its row), posts `p_charge` of the hold (a
-- delivered job) or voids it (any other status), writes the job's final state and announces it
-- on `faceoff_job_updated`. A delivered job whose hold the sweeper already voided is delivered
-- free, with `p_late_reason`. Returns 'settled' and what was charged.
-- Webhook outbox rows are written by the caller in the same transaction (`p_outbox`): called
-- without it (one statement, its own transaction) for a user who has webhook endpoints, it
-- changes nothing and answers 'webhooks', and the caller settles again in a transaction.
CREATE FUNCTION faceoff_settle_job(
    p_job_id      uuid,
    p_lease       uuid,
    p_status      text,
    p_reason      text,
    p_charge      bigint,
    p_memo        text,
    p_image_key   text,
    p_thumb_key   text,
    p_width       integer,
    p_height      integer,
    p_media       jsonb,
    p_late_reason text,
    p_outbox      boolean,
    OUT outcome   text,
    OUT charged   bigint
) AS $$
DECLARE
    v_hold     bigint;
    v_run      uuid;
    v_user     uuid;
    v_resolved text;
    v_reason   text := p_reason;
BEGIN
    SELECT hold_id, run_id, user_id INTO v_hold, v_run, v_user FROM generation_job
     WHERE job_id = p_job_id AND lease_token = p_lease AND status = 'running'
       FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'lost_lease';
        RETURN;
    END IF;
    IF NOT p_outbox AND EXISTS (SELECT 1 FROM webhook_endpoint w WHERE w.user_id = v_user) THEN
        outcome := 'webhooks';
        RETURN;
    END IF;
    INSERT INTO media_object (key, content_type, byte_size, width, height, owner_user_id)
    SELECT m.key, m.content_type, m.byte_size, m.width, m.height, v_user
      FROM jsonb_to_recordset(COALESCE(p_media, '[]')) AS m(key text, content_type text, byte_size bigint,
                                                             width integer, height integer)
    ON CONFLICT (key) DO NOTHING;
    IF p_status = 'delivered' THEN
        v_resolved := ledger_resolve_hold(v_hold, p_charge, p_memo, v_run, p_job_id);
        IF v_resolved = 'voided' THEN
            charged := 0;
            v_reason := p_late_reason;
        ELSIF v_resolved = 'posted' THEN
            RAISE EXCEPTION 'hold % is already posted', v_hold USING ERRCODE = 'P0001', HINT = 'faceoff:hold_posted';
        ELSE
            charged := p_charge;
        END IF;
    ELSE
        v_resolved := ledger_resolve_hold(v_hold, NULL, p_memo, v_run, p_job_id);
        IF v_resolved = 'posted' THEN
            RAISE EXCEPTION 'hold % is already posted', v_hold USING ERRCODE = 'P0001', HINT = 'faceoff:hold_posted';
        END IF;
        charged := 0;
    END IF;
    UPDATE generation_job
       SET status = p_status, reason = v_reason, image_key = p_image_key, thumb_key = p_thumb_key,
           image_width = p_width, image_height = p_height, charged = faceoff_settle_job.charged,
           progress = CASE WHEN p_status = 'delivered' THEN 1 ELSE progress END, finished_at = now(),
           lease_token = NULL, lease_expires_at = NULL
     WHERE job_id = p_job_id;
    PERFORM pg_notify('faceoff_job_updated', v_run::text);
    outcome := 'settled';
END;
$$ LANGUAGE plpgsql;
