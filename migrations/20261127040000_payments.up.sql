-- Payments: one row per checkout a user starts (a credit pack bought through Stripe Checkout or
-- the sandbox), and the provider events we have processed.
--
-- A payment is credited at most once: its Checkout Session id is unique, the top-up transfer it
-- points to is unique, and the ledger transfer itself carries the key `checkout:{session_id}`.

CREATE TABLE payment (
    payment_id          uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES app_user (user_id),
    pack_slug           text NOT NULL,
    pack_name           text NOT NULL,
    credits             bigint NOT NULL CONSTRAINT payment_credits_positive CHECK (credits > 0),
    amount_cents        bigint NOT NULL CONSTRAINT payment_amount_positive CHECK (amount_cents > 0),
    currency            text NOT NULL,
    provider            text NOT NULL CONSTRAINT payment_provider_check CHECK (provider IN ('stripe', 'sandbox')),
    status              text NOT NULL DEFAULT 'pending'
                        CONSTRAINT payment_status_check CHECK (status IN ('pending', 'paid', 'failed', 'canceled')),
    checkout_session_id text CONSTRAINT payment_checkout_session_key UNIQUE,
    checkout_url        text,
    transfer_id         bigint CONSTRAINT payment_transfer_key UNIQUE REFERENCES ledger_transfer (transfer_id),
    failure_reason      text,
    paid_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- Paid exactly when credited.
    CONSTRAINT payment_paid_check CHECK (
        (status = 'paid' AND transfer_id IS NOT NULL AND paid_at IS NOT NULL AND checkout_session_id IS NOT NULL)
        OR (status <> 'paid' AND transfer_id IS NULL AND paid_at IS NULL)
    )
);
CREATE INDEX payment_user_idx ON payment (user_id, created_at DESC);
CREATE TRIGGER payment_updated_at BEFORE UPDATE ON payment FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A paid payment never changes again.
CREATE OR REPLACE FUNCTION payment_paid_is_final() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'payment rows are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status = 'paid' THEN
        RAISE EXCEPTION 'payment % is already paid', OLD.payment_id USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER payment_paid_is_final BEFORE UPDATE OR DELETE ON payment
    FOR EACH ROW EXECUTE FUNCTION payment_paid_is_final();

-- Every verified webhook event, once (Stripe delivers at least once).
CREATE TABLE stripe_event (
    event_id            text CONSTRAINT stripe_event_pkey PRIMARY KEY,
    event_type          text NOT NULL,
    checkout_session_id text,
    payment_id          uuid REFERENCES payment (payment_id),
    outcome             text NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_event_session_idx ON stripe_event (checkout_session_id);
