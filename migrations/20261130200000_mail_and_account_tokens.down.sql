DROP TABLE mail_outbox;
DROP TABLE signup_grant_claim;
DROP TABLE account_token;
ALTER TABLE app_user DROP CONSTRAINT app_user_deleted_scrubbed_check;
ALTER TABLE app_user DROP COLUMN deleted_at;
ALTER TABLE app_user DROP COLUMN email_verified_at;
