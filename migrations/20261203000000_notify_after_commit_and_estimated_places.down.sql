-- As before 20261203000000.up: places counted up to `p_max`, and the functions notify inside
-- their transactions.
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

SELECT pg_temp.add_before(p.oid::regprocedure, 'job_id := j.job_id;', 'ahead := LEAST(ahead, p_max);')
  FROM pg_proc p WHERE p.proname = 'job_queue_places';

-- Places counted up to `p_max` again (as 20261202000000 made them).
CREATE OR REPLACE FUNCTION job_queue_ahead(p_provider text, p_slot bigint, p_interactive boolean, p_job uuid, p_max bigint)
RETURNS bigint AS $$
BEGIN
    RETURN (SELECT count(*) FROM (
        SELECT 1 FROM generation_job q
         WHERE q.status = 'queued' AND q.fair_slot <= p_slot
           AND (q.fair_slot < p_slot OR (q.interactive AND NOT p_interactive)
                OR (q.interactive = p_interactive AND q.job_id < p_job))
           AND (p_provider IS NULL OR q.provider = p_provider)
         ORDER BY q.fair_slot, q.interactive DESC, q.job_id
         LIMIT p_max) a);
END;
$$ LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_sort = off SET enable_bitmapscan = off SET jit = off;

