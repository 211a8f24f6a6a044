DROP TRIGGER IF EXISTS api_key_deleted ON api_key;
DROP TRIGGER IF EXISTS api_key_revoked ON api_key;
DROP FUNCTION IF EXISTS api_key_revoked_notify();
