-- The credit ledger: double-entry, append-only, integer credits.
--
-- A transfer moves `amount` from a debit account to a credit account and writes two entries
-- (-amount, +amount), so the sum over all entries is zero by construction. User wallets cache
-- their balance (checked never to go negative); system accounts are not cached (no hot row) and
-- may go negative: their balance is the sum of their entries.

CREATE TABLE ledger_account (
    account_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL CONSTRAINT ledger_account_kind_check CHECK (kind IN ('user', 'system')),
    user_id    uuid UNIQUE REFERENCES app_user (user_id),
    code       text UNIQUE,
    balance    bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_account_owner_check CHECK (
        (kind = 'user' AND user_id IS NOT NULL AND code IS NULL AND balance IS NOT NULL)
        OR (kind = 'system' AND user_id IS NULL AND code IS NOT NULL AND balance IS NULL)
    ),
    CONSTRAINT ledger_account_nonneg_check CHECK (balance >= 0)
);
CREATE TRIGGER ledger_account_updated_at BEFORE UPDATE ON ledger_account FOR EACH ROW EXECUTE FUNCTION set_updated_at();

INSERT INTO ledger_account (kind, code) VALUES
    ('system', 'signup_grants'),
    ('system', 'topup_sales'),
    ('system', 'generation_revenue'),
    ('system', 'adjustments'),
    ('system', 'pending_holds');

CREATE TABLE ledger_transfer (
    transfer_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key   text NOT NULL CONSTRAINT ledger_transfer_key_unique UNIQUE,
    debit_account_id  bigint NOT NULL REFERENCES ledger_account (account_id),
    credit_account_id bigint NOT NULL REFERENCES ledger_account (account_id),
    amount            bigint NOT NULL CONSTRAINT ledger_transfer_amount_positive CHECK (amount > 0),
    kind              text NOT NULL CONSTRAINT ledger_transfer_kind_check
                      CHECK (kind IN ('signup_bonus', 'hold', 'hold_post', 'hold_release', 'topup', 'adjustment')),
    memo              text NOT NULL DEFAULT '',
    -- What the transfer belongs to, for the user's history.
    hold_id           bigint,
    run_id            uuid,
    job_id            uuid,
    payment_id        uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transfer_distinct_accounts CHECK (debit_account_id <> credit_account_id)
);
CREATE TRIGGER ledger_transfer_append_only BEFORE UPDATE OR DELETE ON ledger_transfer
    FOR EACH ROW EXECUTE FUNCTION forbid_change();

CREATE TABLE ledger_entry (
    entry_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id   bigint NOT NULL REFERENCES ledger_transfer (transfer_id),
    account_id    bigint NOT NULL REFERENCES ledger_account (account_id),
    amount        bigint NOT NULL CONSTRAINT ledger_entry_nonzero CHECK (amount <> 0),
    -- The account's cached balance after this entry (user wallets only).
    balance_after bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_entry_one_per_side UNIQUE (transfer_id, account_id)
);
CREATE INDEX ledger_entry_account_idx ON ledger_entry (account_id, entry_id DESC);
CREATE TRIGGER ledger_entry_append_only BEFORE UPDATE OR DELETE ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- Two-phase holds: reserved credits sit in the `pending_holds` system account until the hold is
-- posted (charged, remainder returned) or voided (all returned). Exactly one resolution.
CREATE TABLE ledger_hold (
    hold_id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id            bigint NOT NULL REFERENCES ledger_account (account_id),
    amount                bigint NOT NULL CONSTRAINT ledger_hold_amount_positive CHECK (amount > 0),
    idempotency_key       text NOT NULL CONSTRAINT ledger_hold_key_unique UNIQUE,
    reserve_transfer_id   bigint NOT NULL UNIQUE REFERENCES ledger_transfer (transfer_id),
    status                text NOT NULL DEFAULT 'pending',
    posted_amount         bigint,
    deadline              timestamptz NOT NULL,
    reason                text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    resolved_at           timestamptz,
    CONSTRAINT ledger_hold_resolution_check CHECK (
        (status = 'pending' AND resolved_at IS NULL AND posted_amount IS NULL)
        OR (status = 'posted' AND resolved_at IS NOT NULL AND posted_amount BETWEEN 0 AND amount)
        OR (status = 'voided' AND resolved_at IS NOT NULL AND posted_amount IS NULL)
    )
);
CREATE INDEX ledger_hold_pending_idx ON ledger_hold (account_id) WHERE status = 'pending';
CREATE INDEX ledger_hold_deadline_idx ON ledger_hold (deadline) WHERE status = 'pending';

-- A resolved hold never changes again, and holds are never deleted.
CREATE OR REPLACE FUNCTION ledger_hold_resolve_once() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger_hold rows are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status <> 'pending' THEN
        RAISE EXCEPTION 'hold % is already %', OLD.hold_id, OLD.status USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.amount <> OLD.amount OR NEW.account_id <> OLD.account_id OR NEW.idempotency_key <> OLD.idempotency_key THEN
        RAISE EXCEPTION 'a hold''s amount, account and key are fixed' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_hold_resolve_once BEFORE UPDATE OR DELETE ON ledger_hold
    FOR EACH ROW EXECUTE FUNCTION ledger_hold_resolve_once();

ALTER TABLE ledger_transfer ADD CONSTRAINT ledger_transfer_hold_fk FOREIGN KEY (hold_id) REFERENCES ledger_hold (hold_id);
