-- The arena: blind runs, their owners' votes, and the boards' snapshots (recomputed in the
-- background; pages read the newest snapshot of each board).

-- What the run was for (a catalog use case's slug or `other`; NULL for runs made before), whether
-- its results were shown blind, the display order (job positions, shown as Model A, B, C, D), and
-- when the owner revealed the names without voting (such a run's vote never counts).
ALTER TABLE generation_run
    ADD COLUMN use_case    text CONSTRAINT generation_run_use_case_check CHECK (use_case ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    ADD COLUMN blind       boolean NOT NULL DEFAULT false,
    ADD COLUMN shown_order smallint[],
    ADD COLUMN revealed_at timestamptz,
    ADD CONSTRAINT generation_run_blind_order_check CHECK (NOT blind OR shown_order IS NOT NULL);

-- One vote per run, by its owner. `entries` are the delivered jobs' entries (`model:variant`) in
-- display order; `winner` indexes them for choice = 'best'.
CREATE TABLE arena_vote (
    vote_id     bigserial PRIMARY KEY,
    run_id      uuid NOT NULL UNIQUE REFERENCES generation_run (run_id),
    voter_id    uuid NOT NULL REFERENCES app_user (user_id),
    use_case    text NOT NULL,
    choice      text NOT NULL CONSTRAINT arena_vote_choice_check CHECK (choice IN ('best', 'tie', 'all_bad')),
    winner      smallint,
    entries     text[] NOT NULL CONSTRAINT arena_vote_entries_check CHECK (cardinality(entries) BETWEEN 2 AND 4),
    -- Any image came from the sandbox: counts only on the demo board.
    sandbox     boolean NOT NULL,
    -- The names were not shown before the vote.
    blind       boolean NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Changes are allowed until then.
    locked_at   timestamptz NOT NULL,
    CONSTRAINT arena_vote_winner_check CHECK (
        (choice = 'best' AND winner IS NOT NULL AND winner >= 0 AND winner < cardinality(entries))
        OR (choice <> 'best' AND winner IS NULL)
    ),
    CONSTRAINT arena_vote_tie_two_check CHECK (choice <> 'tie' OR cardinality(entries) = 2)
);
CREATE INDEX arena_vote_board_idx ON arena_vote (use_case, created_at);
CREATE INDEX arena_vote_voter_idx ON arena_vote (voter_id, created_at);
CREATE TRIGGER arena_vote_updated_at BEFORE UPDATE ON arena_vote FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- One computed board: `board` is `all`, a use case's slug, or `demo` (sandbox renderings).
CREATE TABLE arena_snapshot (
    snapshot_id    bigserial PRIMARY KEY,
    board          text NOT NULL,
    computed_at    timestamptz NOT NULL DEFAULT now(),
    -- The newest vote id seen and how many votes counted / were held back.
    last_vote_id   bigint NOT NULL,
    counted_votes  bigint NOT NULL,
    excluded_votes bigint NOT NULL,
    bootstrap      integer NOT NULL,
    -- Position check: decisive two-way votes, and how many the image shown first won.
    decisive_votes bigint NOT NULL DEFAULT 0,
    first_won      bigint NOT NULL DEFAULT 0
);
CREATE INDEX arena_snapshot_board_idx ON arena_snapshot (board, snapshot_id DESC);

CREATE TABLE arena_snapshot_entry (
    snapshot_id        bigint NOT NULL REFERENCES arena_snapshot (snapshot_id) ON DELETE CASCADE,
    entry              text NOT NULL,
    name               text NOT NULL,
    rating             float8 NOT NULL,
    rating_lo          float8 NOT NULL,
    rating_hi          float8 NOT NULL,
    rank               integer,
    provisional        boolean NOT NULL,
    votes              bigint NOT NULL,
    win_rate           float8,
    expected_win_rate  float8 NOT NULL,
    price              bigint,
    cost_per_win       float8,
    cost_per_win_lo    float8,
    cost_per_win_hi    float8,
    median_ms          bigint,
    timed_jobs         bigint NOT NULL,
    PRIMARY KEY (snapshot_id, entry)
);

-- The direct record of two entries on a board (comparison pages).
CREATE TABLE arena_snapshot_pair (
    snapshot_id bigint NOT NULL REFERENCES arena_snapshot (snapshot_id) ON DELETE CASCADE,
    entry_a     text NOT NULL,
    entry_b     text NOT NULL,
    votes       bigint NOT NULL,
    -- Share of `entry_a`'s score in their direct votes (wins + ½ ties).
    score_a     float8 NOT NULL,
    PRIMARY KEY (snapshot_id, entry_a, entry_b)
);
