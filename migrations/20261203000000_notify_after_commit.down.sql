-- The functions notify inside their transactions again (as before 20261203000000.up).
CREATE OR REPLACE FUNCTION pg_temp.add_before(p_function regprocedure, p_anchor text, p_statement text) RETURNS void AS $$
DECLARE
    v_def text := pg_get_functiondef(p_function);
BEGIN
    IF array_length(string_to_array(v_def, p_anchor), 1) IS DISTINCT FROM 2 THEN
        RAISE EXCEPTION '% does not contain % exactly once', p_function, p_anchor;
    END IF;
    EXECUTE replace(v_def, p_anchor, p_statement || E'\n    ' || p_anchor);
END;
$$ LANGUAGE plpgsql;

SELECT pg_temp.add_before(p.oid::regprocedure, 'outcome := ''created'';', 'PERFORM pg_notify(''faceoff_job_queued'', '''');')
  FROM pg_proc p WHERE p.proname = 'faceoff_create_run';
SELECT pg_temp.add_before(p.oid::regprocedure, 'outcome := ''settled'';', 'PERFORM pg_notify(''faceoff_job_updated'', v_run::text);')
  FROM pg_proc p WHERE p.proname = 'faceoff_settle_job';
