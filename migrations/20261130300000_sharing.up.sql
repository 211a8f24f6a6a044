-- Sharing runs: publications (an unguessable public address per publication of a run), hiding
-- by an administrator, and reports by signed-in users.

-- One row per publication. `share_id` is 128 random bits, base64url (22 characters): the only
-- way to reach the public page. Unpublishing ends the row for good (publishing again makes a
-- new address, so an old link never comes back to life); an administrator's hide ends it too
-- and keeps the run from being published again.
CREATE TABLE run_share (
    share_id        text PRIMARY KEY CONSTRAINT run_share_id_check CHECK (share_id ~ '^[A-Za-z0-9_-]{22,64}$'),
    run_id          uuid NOT NULL REFERENCES generation_run (run_id),
    user_id         uuid NOT NULL REFERENCES app_user (user_id),
    -- Any of its images came from the sandbox (labelled wherever the run appears).
    sandbox         boolean NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now(),
    unpublished_at  timestamptz,
    hidden_at       timestamptz,
    hidden_by       uuid REFERENCES app_user (user_id),
    hidden_reason   text CONSTRAINT run_share_hidden_reason_check CHECK (char_length(hidden_reason) <= 500),
    -- The social card in the object store, once rendered (a `media_object` key).
    card_key        text REFERENCES media_object (key),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT run_share_hidden_check CHECK (hidden_by IS NULL OR hidden_at IS NOT NULL)
);
-- At most one live (not unpublished, not hidden) publication per run.
CREATE UNIQUE INDEX run_share_live_key ON run_share (run_id) WHERE unpublished_at IS NULL AND hidden_at IS NULL;
CREATE INDEX run_share_run_idx ON run_share (run_id);
CREATE INDEX run_share_user_idx ON run_share (user_id);
CREATE INDEX run_share_gallery_idx ON run_share (published_at DESC) WHERE unpublished_at IS NULL AND hidden_at IS NULL;
CREATE TRIGGER run_share_updated_at BEFORE UPDATE ON run_share FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A signed-in user's report of a published run. One report per user and publication.
CREATE TABLE run_report (
    report_id    bigserial PRIMARY KEY,
    share_id     text NOT NULL REFERENCES run_share (share_id),
    reporter_id  uuid NOT NULL REFERENCES app_user (user_id),
    reason       text NOT NULL CONSTRAINT run_report_reason_check CHECK (char_length(btrim(reason)) BETWEEN 3 AND 1000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- When an administrator dealt with it (hid the run or dismissed the report).
    resolved_at  timestamptz,
    CONSTRAINT run_report_once_key UNIQUE (share_id, reporter_id)
);
CREATE INDEX run_report_open_idx ON run_report (created_at) WHERE resolved_at IS NULL;
CREATE INDEX run_report_reporter_idx ON run_report (reporter_id, created_at);
