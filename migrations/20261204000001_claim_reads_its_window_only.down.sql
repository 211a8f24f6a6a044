-- As in 20261201070000_claim_job_returns_run: the window joined in the table's order.
CREATE OR REPLACE FUNCTION pg_temp.replace_once(p_function regprocedure, p_old text, p_new text) RETURNS void AS $$
DECLARE
    v_def text := pg_get_functiondef(p_function);
BEGIN
    IF array_length(string_to_array(v_def, p_old), 1) IS DISTINCT FROM 2 THEN
        RAISE EXCEPTION '% does not contain % exactly once', p_function, p_old;
    END IF;
    EXECUTE replace(v_def, p_old, p_new);
END;
$$ LANGUAGE plpgsql;

SELECT pg_temp.replace_once('faceoff_claim_job(uuid, double precision, text[], bigint, bigint, bigint)'::regprocedure,
    'SELECT job_id, user_id, interactive, fair_slot FROM generation_job',
    'SELECT job_id, user_id, interactive FROM generation_job');
SELECT pg_temp.replace_once('faceoff_claim_job(uuid, double precision, text[], bigint, bigint, bigint)'::regprocedure,
    'ORDER BY h.fair_slot, h.interactive DESC, h.job_id',
    'ORDER BY j.fair_slot, j.interactive DESC, j.job_id');
