-- People who sign up, and their server-side sessions.

CREATE TABLE app_user (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL CONSTRAINT app_user_email_length CHECK (char_length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'user' CONSTRAINT app_user_role_check CHECK (role IN ('user', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails are compared case-insensitively.
CREATE UNIQUE INDEX app_user_email_key ON app_user (lower(email));
CREATE TRIGGER app_user_updated_at BEFORE UPDATE ON app_user FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- tower-sessions records: the opaque id is the cookie, the data stays here.
CREATE TABLE session (
    id          text PRIMARY KEY,
    data        jsonb NOT NULL,
    expiry_date timestamptz NOT NULL
);
CREATE INDEX session_expiry_idx ON session (expiry_date);
CREATE INDEX session_user_idx ON session ((data ->> 'user_id'));
