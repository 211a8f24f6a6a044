-- The SHA-256 of what a run's request asked for (trimmed text, models in order, the seed as
-- typed, the reference image's bytes): a retry with the same idempotency key and the same
-- request returns the run; the same key with another request is refused (409). Runs made before
-- have none and replay whatever is sent, as they did.
ALTER TABLE generation_run ADD COLUMN request_fingerprint bytea
    CONSTRAINT generation_run_fingerprint_length CHECK (octet_length(request_fingerprint) = 32);
