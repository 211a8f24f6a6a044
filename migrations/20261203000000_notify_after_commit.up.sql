-- Issue 18: the run's creation and a job's settlement no longer NOTIFY inside their
-- transaction; the app announces once they have committed (`db::notifications::announce`).
-- A NOTIFY holds PostgreSQL's notify lock from its transaction's commit until the commit is on
-- disk, so every transaction that notifies commits after the previous one's flush, across the
-- whole cluster (pgbench's TPC-B on this machine kind: 2,750 tps, 1,300 with one NOTIFY added).
--
-- Each function is redefined as installed with its one NOTIFY statement removed (the whole
-- bodies are in 20261202000000 and 20261201050000); the edit refuses to run unless it finds the
-- statement exactly once.
CREATE OR REPLACE FUNCTION pg_temp.drop_statement(p_function regprocedure, p_statement text) RETURNS void AS $$
DECLARE
    v_def text := pg_get_functiondef(p_function);
BEGIN
    IF array_length(string_to_array(v_def, p_statement), 1) IS DISTINCT FROM 2 THEN
        RAISE EXCEPTION '% does not contain % exactly once', p_function, p_statement;
    END IF;
    EXECUTE replace(v_def, p_statement, '');
END;
$$ LANGUAGE plpgsql;

SELECT pg_temp.drop_statement(p.oid::regprocedure, 'PERFORM pg_notify(''faceoff_job_queued'', '''');')
  FROM pg_proc p WHERE p.proname = 'faceoff_create_run';
SELECT pg_temp.drop_statement(p.oid::regprocedure, 'PERFORM pg_notify(''faceoff_job_updated'', v_run::text);')
  FROM pg_proc p WHERE p.proname = 'faceoff_settle_job';
