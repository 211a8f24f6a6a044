-- Whether a job's variant was its model's default when the run was made: a model choice is
-- named "Flux 2" (the default variant) or "Flux 2 (Klein 9B)", and `flux-2` or
-- `flux-2:klein-9b` in the API, from the catalog's default flag rather than a variant's slug.
ALTER TABLE generation_job ADD COLUMN variant_is_default boolean;
-- Settled jobs never change (generation_job_settle_once); this backfill is the one exception.
ALTER TABLE generation_job DISABLE TRIGGER generation_job_settle_once;
UPDATE generation_job j
SET variant_is_default = COALESCE(
    (SELECT v.is_default FROM model_variant v WHERE v.model_slug = j.model_slug AND v.slug = j.variant_slug),
    j.variant_slug = 'standard');
ALTER TABLE generation_job ENABLE TRIGGER generation_job_settle_once;
ALTER TABLE generation_job ALTER COLUMN variant_is_default SET NOT NULL;
