ALTER TABLE payment DROP COLUMN review_reason;
