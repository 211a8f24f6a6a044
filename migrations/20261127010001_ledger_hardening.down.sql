DROP TRIGGER IF EXISTS ledger_account_fixed ON ledger_account;
DROP FUNCTION IF EXISTS ledger_account_fixed();
DROP TRIGGER IF EXISTS ledger_hold_matches_reserve ON ledger_hold;
DROP FUNCTION IF EXISTS ledger_hold_matches_reserve();
DROP TRIGGER IF EXISTS ledger_entry_chain ON ledger_entry;
DROP FUNCTION IF EXISTS ledger_entry_chain();
DROP TRIGGER IF EXISTS ledger_transfer_balanced ON ledger_transfer;
DROP FUNCTION IF EXISTS ledger_transfer_balanced();
