DROP FUNCTION IF EXISTS forbid_change();
DROP FUNCTION IF EXISTS set_updated_at();
