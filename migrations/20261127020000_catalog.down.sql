DROP TABLE IF EXISTS showcase_image;
DROP TABLE IF EXISTS catalog_revision;
DROP TABLE IF EXISTS comparison_content;
DROP TABLE IF EXISTS use_case;
DROP TABLE IF EXISTS variant_price;
DROP TABLE IF EXISTS model_variant;
DROP TABLE IF EXISTS catalog_model;
DROP TABLE IF EXISTS catalog_provider;
