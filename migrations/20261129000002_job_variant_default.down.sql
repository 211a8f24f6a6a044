ALTER TABLE generation_job DROP COLUMN variant_is_default;
