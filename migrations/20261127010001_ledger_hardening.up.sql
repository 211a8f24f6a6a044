-- Ledger hardening: the database itself refuses an unbalanced transfer, a cached wallet balance
-- that drifts from its entries, and a hold that does not match the transfer that reserved it.

-- Every transfer is exactly two entries: -amount on the debit account, +amount on the credit
-- account. Checked at commit (deferred), after the entries that follow the transfer's row.
CREATE FUNCTION ledger_transfer_balanced() RETURNS trigger AS $$
DECLARE
    n         int;
    total     bigint;
    debit_ok  boolean;
    credit_ok boolean;
BEGIN
    SELECT count(*), COALESCE(sum(amount), 0),
           COALESCE(bool_or(account_id = NEW.debit_account_id AND amount = -NEW.amount), false),
           COALESCE(bool_or(account_id = NEW.credit_account_id AND amount = NEW.amount), false)
      INTO n, total, debit_ok, credit_ok
      FROM ledger_entry WHERE transfer_id = NEW.transfer_id;
    IF n <> 2 OR total <> 0 OR NOT debit_ok OR NOT credit_ok THEN
        RAISE EXCEPTION 'transfer % is not a balanced pair of entries', NEW.transfer_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transfer_balanced';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER ledger_transfer_balanced AFTER INSERT ON ledger_transfer
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_transfer_balanced();

-- A wallet's entries form a chain: each entry's balance_after is the previous one's plus its
-- amount, and equals the wallet's cached balance at that moment (the wallet row is locked by
-- the transfer, so "previous" is well defined). System accounts carry no balance_after.
CREATE FUNCTION ledger_entry_chain() RETURNS trigger AS $$
DECLARE
    acct_kind    text;
    acct_balance bigint;
    prev         bigint;
BEGIN
    SELECT kind, balance INTO acct_kind, acct_balance FROM ledger_account WHERE account_id = NEW.account_id;
    IF acct_kind = 'user' THEN
        SELECT balance_after INTO prev FROM ledger_entry
         WHERE account_id = NEW.account_id ORDER BY entry_id DESC LIMIT 1;
        IF NEW.balance_after IS NULL
           OR NEW.balance_after <> COALESCE(prev, 0) + NEW.amount
           OR NEW.balance_after <> acct_balance THEN
            RAISE EXCEPTION 'entry on account % breaks its balance chain (previous %, amount %, after %, cached %)',
                NEW.account_id, COALESCE(prev, 0), NEW.amount, NEW.balance_after, acct_balance
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_chain';
        END IF;
    ELSIF NEW.balance_after IS NOT NULL THEN
        RAISE EXCEPTION 'system account % has no cached balance', NEW.account_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_chain';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_entry_chain BEFORE INSERT ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_chain();

-- A hold matches the transfer that reserved it: same wallet, same amount, kind 'hold', into
-- the pending_holds account.
CREATE FUNCTION ledger_hold_matches_reserve() RETURNS trigger AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM ledger_transfer t JOIN ledger_account p ON p.account_id = t.credit_account_id
         WHERE t.transfer_id = NEW.reserve_transfer_id AND t.kind = 'hold' AND t.amount = NEW.amount
           AND t.debit_account_id = NEW.account_id AND p.code = 'pending_holds'
    ) THEN
        RAISE EXCEPTION 'hold does not match its reserve transfer %', NEW.reserve_transfer_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_hold_matches_reserve';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_hold_matches_reserve BEFORE INSERT ON ledger_hold
    FOR EACH ROW EXECUTE FUNCTION ledger_hold_matches_reserve();

-- Accounts keep their identity; only a wallet's cached balance (and updated_at) changes.
CREATE FUNCTION ledger_account_fixed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger accounts are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.kind <> OLD.kind OR NEW.user_id IS DISTINCT FROM OLD.user_id OR NEW.code IS DISTINCT FROM OLD.code THEN
        RAISE EXCEPTION 'a ledger account''s kind, owner and code are fixed' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_account_fixed BEFORE UPDATE OR DELETE ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_account_fixed();
