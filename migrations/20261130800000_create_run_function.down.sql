DROP FUNCTION IF EXISTS faceoff_create_run(uuid, uuid, text, text, text, bigint, text, text, bigint, bytea, text, text, boolean, smallint[], bigint, timestamptz, timestamptz, jsonb, double precision);
DROP FUNCTION IF EXISTS ledger_reserve_holds(uuid, bigint[], text[], text[], uuid, uuid[], timestamptz);
