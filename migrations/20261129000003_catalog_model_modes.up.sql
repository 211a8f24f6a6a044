-- `catalog_model.modes` was written at every catalog load and never read: a model's modes are
-- the modes its default variant has a price for (`variant_price`), one fact in one place.
ALTER TABLE catalog_model DROP COLUMN modes;
