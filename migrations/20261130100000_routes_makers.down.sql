ALTER TABLE generation_job DROP COLUMN usage_markup, DROP COLUMN route, DROP COLUMN routes;
ALTER TABLE catalog_model DROP COLUMN price_note, DROP COLUMN usage_markup, DROP COLUMN successor,
    DROP COLUMN lifecycle_note, DROP COLUMN lifecycle;
ALTER TABLE model_variant DROP COLUMN routes;
