-- Issue 13: every maker. A variant names its routes (`adapter:endpoint`, the maker's own API
-- first, then fal or Replicate); a job copies them and records the route that made its image.
-- Models carry a lifecycle (a retired model keeps its pages, with a successor) and a billing
-- kind: `usage` models hold their catalog price and are charged what the provider reports
-- (times `usage_markup`), capped by the hold.
ALTER TABLE model_variant ADD COLUMN routes text[] NOT NULL DEFAULT '{}';

ALTER TABLE catalog_model
    ADD COLUMN lifecycle text NOT NULL DEFAULT 'active'
        CONSTRAINT catalog_model_lifecycle_check CHECK (lifecycle IN ('active', 'retiring', 'retired')),
    ADD COLUMN lifecycle_note text,
    ADD COLUMN successor text,
    ADD COLUMN usage_markup real CONSTRAINT catalog_model_usage_markup_check CHECK (usage_markup > 0),
    ADD COLUMN price_note text NOT NULL DEFAULT '';

ALTER TABLE generation_job
    ADD COLUMN routes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN route text,
    ADD COLUMN usage_markup real CONSTRAINT generation_job_usage_markup_check CHECK (usage_markup > 0);
