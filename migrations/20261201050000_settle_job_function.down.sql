DROP FUNCTION IF EXISTS faceoff_settle_job(uuid, uuid, text, text, bigint, text, text, text, integer, integer, jsonb, text, boolean);
DROP FUNCTION IF EXISTS ledger_resolve_hold(bigint, bigint, text, uuid, uuid);
DROP FUNCTION IF EXISTS ledger_hold_transfer(text, bigint, bigint, bigint, text, text, bigint, uuid, uuid);
