DROP FUNCTION IF EXISTS faceoff_claim_job(uuid, double precision, text[], bigint, bigint, bigint);
