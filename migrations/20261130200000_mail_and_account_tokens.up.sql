-- Accounts that last (issue 15): verified addresses, one-time tokens sent by mail, the mail
-- outbox, the once-per-address sign-up grant, and deleted accounts kept as pseudonyms.

-- When the address was confirmed through a link sent to it (NULL: not yet).
ALTER TABLE app_user ADD COLUMN email_verified_at timestamptz;
-- A deleted account: its email and password are scrubbed, its content deleted; the row stays as
-- the pseudonymous owner of its ledger wallet and payments, so the books still balance.
ALTER TABLE app_user ADD COLUMN deleted_at timestamptz;
ALTER TABLE app_user ADD CONSTRAINT app_user_deleted_scrubbed_check
    CHECK (deleted_at IS NULL OR (email LIKE 'deleted-%@deleted.invalid' AND password_hash = '!'));

-- One-time tokens of the mail-link flows. Only the SHA-256 of the token is kept.
CREATE TABLE account_token (
    token_hash bytea PRIMARY KEY CONSTRAINT account_token_hash_length CHECK (octet_length(token_hash) = 32),
    user_id    uuid NOT NULL REFERENCES app_user (user_id) ON DELETE CASCADE,
    purpose    text NOT NULL CONSTRAINT account_token_purpose_check
               CHECK (purpose IN ('verify_email', 'reset_password', 'change_email')),
    -- The address the token confirms (verify_email: the user's address then; change_email: the new one).
    email      text NOT NULL CONSTRAINT account_token_email_length CHECK (char_length(email) BETWEEN 3 AND 254),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    CONSTRAINT account_token_expiry_check CHECK (expires_at > created_at)
);
CREATE INDEX account_token_user_idx ON account_token (user_id, purpose, created_at DESC);

-- Normalized addresses (their SHA-256) that have received the free sign-up credits: once per
-- address, ever (no reference to the user: it outlives a deleted account).
CREATE TABLE signup_grant_claim (
    address_hash bytea PRIMARY KEY CONSTRAINT signup_grant_claim_hash_length CHECK (octet_length(address_hash) = 32),
    claimed_at   timestamptz NOT NULL DEFAULT now()
);

-- The mail outbox: a message is written in the transaction of the action that sends it, and
-- delivered by the sender task of any process (claimed with FOR UPDATE SKIP LOCKED).
CREATE TABLE mail_outbox (
    mail_id         uuid PRIMARY KEY,
    -- Who it concerns (NULL once the account is deleted: the row stays until sent or failed).
    user_id         uuid REFERENCES app_user (user_id) ON DELETE SET NULL,
    kind            text NOT NULL,
    to_address      text NOT NULL CONSTRAINT mail_outbox_to_length CHECK (char_length(to_address) BETWEEN 3 AND 254),
    subject         text NOT NULL,
    text_body       text NOT NULL,
    html_body       text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CONSTRAINT mail_outbox_status_check CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CONSTRAINT mail_outbox_attempts_check CHECK (attempts >= 0),
    -- Pending: when the next attempt is due (while one is being sent: when its lease runs out).
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT mail_outbox_sent_check CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX mail_outbox_user_idx ON mail_outbox (user_id);
