ALTER TABLE catalog_model ADD COLUMN modes text[] NOT NULL DEFAULT '{}';
