-- Runs (one prompt sent to 2–4 model variants), their generation jobs (the work queue the
-- workers claim with a lease), and personal API keys for the JSON API.

CREATE TABLE generation_run (
    run_id          uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES app_user (user_id),
    prompt          text NOT NULL CONSTRAINT generation_run_prompt_length CHECK (char_length(prompt) BETWEEN 1 AND 2000),
    mode            text NOT NULL CONSTRAINT generation_run_mode_check CHECK (mode IN ('2k', '4k')),
    aspect_ratio    text NOT NULL,
    seed            bigint NOT NULL CONSTRAINT generation_run_seed_range CHECK (seed BETWEEN 0 AND 4294967295),
    -- media_object key of the optional reference image (image-to-image).
    reference_key   text REFERENCES media_object (key),
    idempotency_key text NOT NULL CONSTRAINT generation_run_idempotency_length CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    total_price     bigint NOT NULL CONSTRAINT generation_run_price_positive CHECK (total_price > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT generation_run_user_key_unique UNIQUE (user_id, idempotency_key)
);
CREATE INDEX generation_run_user_idx ON generation_run (user_id, created_at DESC, run_id DESC);
CREATE TRIGGER generation_run_updated_at BEFORE UPDATE ON generation_run FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE generation_job (
    job_id           uuid PRIMARY KEY,
    run_id           uuid NOT NULL REFERENCES generation_run (run_id),
    position         smallint NOT NULL,
    model_slug       text NOT NULL,
    model_name       text NOT NULL,
    variant_slug     text NOT NULL,
    variant_name     text NOT NULL,
    -- The catalog provider (e.g. `bfl`) and its endpoint id for the variant.
    provider         text NOT NULL,
    endpoint         text NOT NULL,
    width            integer NOT NULL CHECK (width > 0),
    height           integer NOT NULL CHECK (height > 0),
    price            bigint NOT NULL CONSTRAINT generation_job_price_positive CHECK (price > 0),
    hold_id          bigint NOT NULL UNIQUE REFERENCES ledger_hold (hold_id),
    status           text NOT NULL DEFAULT 'queued' CONSTRAINT generation_job_status_check
                     CHECK (status IN ('queued', 'running', 'delivered', 'failed', 'moderated', 'timed_out')),
    -- How many times the job was claimed; with lease_token it fences out workers that lost the lease.
    attempts         integer NOT NULL DEFAULT 0,
    lease_token      uuid,
    lease_expires_at timestamptz,
    run_after        timestamptz NOT NULL DEFAULT now(),
    deadline         timestamptz NOT NULL,
    -- Which provider implementation ran it (`sandbox`, `bfl`) and its task, recorded before polling.
    provider_impl    text,
    submission       jsonb,
    progress         real,
    reason           text,
    image_key        text REFERENCES media_object (key),
    thumb_key        text REFERENCES media_object (key),
    image_width      integer,
    image_height     integer,
    charged          bigint,
    started_at       timestamptz,
    finished_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT generation_job_position_unique UNIQUE (run_id, position),
    CONSTRAINT generation_job_settled_check CHECK (
        (status IN ('queued', 'running') AND finished_at IS NULL AND charged IS NULL)
        OR (status = 'delivered' AND finished_at IS NOT NULL AND charged IS NOT NULL AND image_key IS NOT NULL)
        OR (status IN ('failed', 'moderated', 'timed_out') AND finished_at IS NOT NULL AND charged = 0)
    ),
    CONSTRAINT generation_job_lease_check CHECK (status <> 'running' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX generation_job_run_idx ON generation_job (run_id, position);
CREATE INDEX generation_job_claim_idx ON generation_job (run_after) WHERE status = 'queued';
CREATE INDEX generation_job_lease_idx ON generation_job (lease_expires_at) WHERE status = 'running';
CREATE TRIGGER generation_job_updated_at BEFORE UPDATE ON generation_job FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A settled job never changes again (the outcome is settled exactly once).
CREATE OR REPLACE FUNCTION generation_job_settle_once() RETURNS trigger AS $$
BEGIN
    IF OLD.status IN ('delivered', 'failed', 'moderated', 'timed_out') THEN
        RAISE EXCEPTION 'job % is already %', OLD.job_id, OLD.status USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER generation_job_settle_once BEFORE UPDATE ON generation_job
    FOR EACH ROW EXECUTE FUNCTION generation_job_settle_once();

-- Personal API keys: only the sha256 of the secret is stored; the secret is shown once.
CREATE TABLE api_key (
    api_key_id   uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES app_user (user_id),
    name         text NOT NULL CONSTRAINT api_key_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL,
    secret_hash  bytea NOT NULL CONSTRAINT api_key_hash_unique UNIQUE,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_key_user_idx ON api_key (user_id, created_at DESC);
