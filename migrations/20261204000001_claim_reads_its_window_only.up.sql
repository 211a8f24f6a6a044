-- Issue 18: the claim reads its window of the fair queue and nothing more, even when every
-- user in the window is at their running limit. The window (`head`: the first `p_window`
-- entries of `generation_job_fair_idx`) was joined back to the table in the order of the
-- table's own columns, which only that index gives, so the planner walked the whole index and
-- probed the window for each entry: when no job of the window could go (one API user with
-- thousands of queued jobs at their limit, say), every claim read the entire queue before it
-- answered "nothing" — 6,610 entries and about 10 ms per claim with 6,770 jobs queued, at each
-- idle worker's poll and wake-up. Ordered by the window's own columns (the same order), the
-- window drives the join: a claim stops at the first job that can go, and reads at most
-- `p_window` entries when none can (1.4–1.8 ms in the same database, `pgbench -t 200`). What is
-- claimed is unchanged (the whole body is in 20261201070000_claim_job_returns_run).
--
-- The function is redefined as installed with its two clauses replaced; the edit refuses to run
-- unless it finds each exactly once.
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
    'SELECT job_id, user_id, interactive FROM generation_job',
    'SELECT job_id, user_id, interactive, fair_slot FROM generation_job');
SELECT pg_temp.replace_once('faceoff_claim_job(uuid, double precision, text[], bigint, bigint, bigint)'::regprocedure,
    'ORDER BY j.fair_slot, j.interactive DESC, j.job_id',
    'ORDER BY h.fair_slot, h.interactive DESC, h.job_id');
