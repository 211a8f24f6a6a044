-- Issue 18, figure 3: API keys are cached per instance (`accounts::api_keys::KeyCache`). Every
-- revocation or deletion of a key, whichever path makes it (the keys page, a password change or
-- reset, an account deletion, SQL by hand), is announced on `faceoff_api_key_revoked` when its
-- transaction commits, and every instance drops its cached keys. Recording a key's use
-- (`last_used_at`) announces nothing.
CREATE FUNCTION api_key_revoked_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('faceoff_api_key_revoked', OLD.api_key_id::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_key_revoked AFTER UPDATE ON api_key FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.secret_hash IS DISTINCT FROM NEW.secret_hash
          OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION api_key_revoked_notify();
CREATE TRIGGER api_key_deleted AFTER DELETE ON api_key FOR EACH ROW EXECUTE FUNCTION api_key_revoked_notify();
