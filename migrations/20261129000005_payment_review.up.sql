-- A paid checkout that could not be matched to its payment's price (no amount reported, another
-- amount or currency) is not credited: it waits here for an administrator's review.
ALTER TABLE payment ADD COLUMN review_reason text;
