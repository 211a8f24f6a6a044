-- Issue 18, two edits of the queue's and the ledger's functions.
--
-- 1. The run's creation and a job's settlement no longer NOTIFY inside their
-- transaction; the app announces once they have committed (`db::notifications::announce`).
-- A NOTIFY holds PostgreSQL's notify lock from its transaction's commit until the commit is on
-- disk, so every transaction that notifies commits after the previous one's flush, across the
-- whole cluster (pgbench's TPC-B on this machine kind: 2,750 tps, 1,300 with one NOTIFY added).
--
-- Each function is redefined as installed with one statement removed (the whole bodies are in
-- 20261202000000 and 20261201050000); the edit refuses to run unless it finds the statement
-- exactly once.
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

-- 2. A place in the queue is counted exactly up to `p_max` jobs ahead
-- (`jobs::queue::MAX_COUNTED`, now 100) and estimated beyond, instead of counted up to 1,000:
-- the count read one index entry and one heap tuple per job ahead, a quarter of PostgreSQL's
-- time per API run with a deep queue, for a number that said only "1,000 or more".
-- The estimate: the first `p_max` jobs ahead are counted as before, and the jobs between the last
-- of them and this job's slot are taken to fill the fair slots as densely as those did. The fair
-- queue gives every waiting flow one slot in turn, so the density is about the number of flows
-- waiting, and changes slowly.
CREATE OR REPLACE FUNCTION job_queue_ahead(p_provider text, p_slot bigint, p_interactive boolean, p_job uuid, p_max bigint)
RETURNS bigint AS $$
DECLARE
    v_counted bigint;
    v_first   bigint;
    v_last    bigint;
BEGIN
    SELECT count(*), min(a.fair_slot), max(a.fair_slot) INTO v_counted, v_first, v_last FROM (
        SELECT q.fair_slot FROM generation_job q
         WHERE q.status = 'queued' AND q.fair_slot <= p_slot
           AND (q.fair_slot < p_slot OR (q.interactive AND NOT p_interactive)
                OR (q.interactive = p_interactive AND q.job_id < p_job))
           AND (p_provider IS NULL OR q.provider = p_provider)
         ORDER BY q.fair_slot, q.interactive DESC, q.job_id
         LIMIT p_max) a;
    IF v_counted < p_max OR v_last >= p_slot THEN
        RETURN v_counted;
    END IF;
    RETURN v_counted + round(v_counted::numeric / (v_last - v_first + 1) * (p_slot - v_last))::bigint;
END;
$$ LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_sort = off SET enable_bitmapscan = off SET jit = off;

-- `job_queue_places` no longer caps the places of a route's later jobs at `p_max`: they are the
-- first job's place (an estimate past `p_max`) plus the few jobs between.
SELECT pg_temp.drop_statement(p.oid::regprocedure, 'ahead := LEAST(ahead, p_max);')
  FROM pg_proc p WHERE p.proname = 'job_queue_places';
