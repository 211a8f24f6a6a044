ALTER TABLE generation_run DROP COLUMN request_fingerprint;
