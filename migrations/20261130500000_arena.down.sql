DROP TABLE arena_snapshot_pair;
DROP TABLE arena_snapshot_entry;
DROP TABLE arena_snapshot;
DROP TABLE arena_vote;
ALTER TABLE generation_run DROP CONSTRAINT generation_run_blind_order_check,
    DROP COLUMN revealed_at, DROP COLUMN shown_order, DROP COLUMN blind, DROP COLUMN use_case;
