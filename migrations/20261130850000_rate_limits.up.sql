-- Global rate limits (accounts::rate_limit::store): counters every instance shares, so that N
-- instances allow what one does. Not user data: keys are hashes (no email or address in
-- clear), rows expire within the hour and are purged by the housekeeping loop. UNLOGGED: a
-- counter is written on every log-in and API request and need not survive a crash (the table
-- is then emptied: the limits start afresh) nor reach a standby, so it writes no WAL.

-- Request and attempt limits: GCRA (the algorithm of the per-process governor limiter in front
-- of it). `tat` is the theoretical arrival time: the bucket is full again then.
CREATE UNLOGGED TABLE rate_limit_bucket (
    key text PRIMARY KEY,
    tat timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX rate_limit_bucket_expires_idx ON rate_limit_bucket (expires_at);

-- Log-in backoff: failures per key and the time of the latest one.
CREATE UNLOGGED TABLE rate_limit_failure (
    key text PRIMARY KEY,
    failures integer NOT NULL CONSTRAINT rate_limit_failure_positive_check CHECK (failures > 0),
    last_failure_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX rate_limit_failure_expires_idx ON rate_limit_failure (expires_at);

-- Counts one request against bucket `p_key`: `p_burst` at once, then one per `p_interval_ms`.
-- Atomic under concurrency (the row is locked from the read to the write); a refused request
-- is not counted. Returns whether it is allowed, how long until the next one is (when
-- refused) and how long until the bucket is full again, in seconds, on the database's clock.
CREATE FUNCTION rate_limit_hit(p_key text, p_interval_ms bigint, p_burst integer,
                               OUT allowed boolean, OUT wait_secs float8, OUT full_secs float8)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := clock_timestamp();
    step interval := make_interval(secs => p_interval_ms / 1000.0);
    tolerance interval := make_interval(secs => p_interval_ms * p_burst / 1000.0);
    base timestamptz;
BEGIN
    INSERT INTO rate_limit_bucket (key, tat, expires_at) VALUES (p_key, t, t + tolerance)
    ON CONFLICT (key) DO NOTHING;
    SELECT greatest(tat, t) INTO base FROM rate_limit_bucket WHERE key = p_key FOR UPDATE;
    base := coalesce(base, t);
    IF base + step - t > tolerance THEN
        allowed := false;
        wait_secs := extract(epoch FROM base + step - t - tolerance);
        full_secs := extract(epoch FROM base - t);
        RETURN;
    END IF;
    INSERT INTO rate_limit_bucket (key, tat, expires_at) VALUES (p_key, base + step, base + step)
    ON CONFLICT (key) DO UPDATE SET tat = excluded.tat, expires_at = excluded.expires_at;
    allowed := true;
    wait_secs := 0;
    full_secs := extract(epoch FROM base + step - t);
END
$$;
