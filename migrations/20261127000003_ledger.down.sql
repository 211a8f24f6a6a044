ALTER TABLE ledger_transfer DROP CONSTRAINT ledger_transfer_hold_fk;
DROP TABLE ledger_hold;
DROP FUNCTION ledger_hold_resolve_once();
DROP TABLE ledger_entry;
DROP TABLE ledger_transfer;
DROP TABLE ledger_account;
