-- Webhooks (issue 17): endpoints of API users, events written in the transaction of their cause
-- (the outbox), deliveries of each event to each subscribed endpoint, and every attempt with its
-- answer.

CREATE TABLE webhook_endpoint (
    endpoint_id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES app_user (user_id) ON DELETE CASCADE,
    url text NOT NULL CONSTRAINT webhook_endpoint_url_check CHECK (char_length(url) BETWEEN 10 AND 2048),
    description text NOT NULL DEFAULT ''
        CONSTRAINT webhook_endpoint_description_check CHECK (char_length(description) <= 200),
    events text[] NOT NULL CONSTRAINT webhook_endpoint_events_check
        CHECK (cardinality(events) >= 1 AND events <@ ARRAY['run.completed', 'job.failed', 'credits.low']),
    -- credits.low is sent when the available balance falls below this.
    credits_low_threshold bigint NOT NULL DEFAULT 50
        CONSTRAINT webhook_endpoint_threshold_check CHECK (credits_low_threshold BETWEEN 1 AND 1000000000),
    -- The signing secret, kept as is: deliveries are signed with it, so it must be readable
    -- (see webhooks/mod.rs for why it is not encrypted with a key from this same database).
    secret text NOT NULL CONSTRAINT webhook_endpoint_secret_check CHECK (secret LIKE 'whsec\_%'),
    -- After a rotation, the old secret signs too until it expires.
    previous_secret text,
    previous_secret_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoint_previous_check CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
CREATE INDEX webhook_endpoint_user_idx ON webhook_endpoint (user_id, created_at);

CREATE TABLE webhook_event (
    event_id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES app_user (user_id) ON DELETE CASCADE,
    type text NOT NULL CONSTRAINT webhook_event_type_check CHECK (type IN ('run.completed', 'job.failed', 'credits.low')),
    run_id uuid,
    job_id uuid,
    -- credits.low: the balance that crossed the threshold.
    available bigint,
    -- The payload, rendered once at the first delivery attempt: every delivery and replay of the
    -- event sends the same body.
    payload jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_event_subject_check CHECK (
        (type = 'run.completed' AND run_id IS NOT NULL)
        OR (type = 'job.failed' AND run_id IS NOT NULL AND job_id IS NOT NULL)
        OR (type = 'credits.low' AND available IS NOT NULL))
);
-- A run completes once, a job fails once.
CREATE UNIQUE INDEX webhook_event_run_completed_key ON webhook_event (run_id) WHERE type = 'run.completed';
CREATE UNIQUE INDEX webhook_event_job_failed_key ON webhook_event (job_id) WHERE type = 'job.failed';

CREATE TABLE webhook_delivery (
    delivery_id uuid PRIMARY KEY,
    event_id uuid NOT NULL REFERENCES webhook_event (event_id) ON DELETE CASCADE,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoint (endpoint_id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'pending'
        CONSTRAINT webhook_delivery_status_check CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CONSTRAINT webhook_delivery_attempts_check CHECK (attempts >= 0),
    -- Pending: when the next attempt is due (while one is being sent: when its lease runs out).
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error text,
    last_attempt_at timestamptz,
    -- A delivery made by "replay" from an earlier one.
    replay_of uuid REFERENCES webhook_delivery (delivery_id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    CONSTRAINT webhook_delivery_completed_check CHECK ((status = 'pending') = (completed_at IS NULL))
);
CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_delivery_endpoint_idx ON webhook_delivery (endpoint_id, created_at DESC, delivery_id DESC);
CREATE INDEX webhook_delivery_event_idx ON webhook_delivery (event_id);

CREATE TABLE webhook_attempt (
    delivery_id uuid NOT NULL REFERENCES webhook_delivery (delivery_id) ON DELETE CASCADE,
    attempt integer NOT NULL CONSTRAINT webhook_attempt_number_check CHECK (attempt >= 1),
    started_at timestamptz NOT NULL,
    duration_ms integer NOT NULL CONSTRAINT webhook_attempt_duration_check CHECK (duration_ms >= 0),
    status_code integer CONSTRAINT webhook_attempt_status_check CHECK (status_code BETWEEN 100 AND 599),
    error text,
    -- The first bytes of the answer, for the account page.
    response_excerpt text,
    PRIMARY KEY (delivery_id, attempt),
    CONSTRAINT webhook_attempt_outcome_check CHECK (status_code IS NOT NULL OR error IS NOT NULL)
);
