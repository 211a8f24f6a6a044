//! The credit ledger: double-entry, append-only, integer credits. No HTTP here; every part of the
//! app that moves credits (sign-up grants, runs, top-ups, admin adjustments) goes through this
//! module, inside the caller's transaction.
//!
//! - [`transfer`] moves credits between two accounts under a unique idempotency key: replaying a
//!   key returns the original transfer; the same key with different accounts or amount is
//!   [`LedgerError::KeyConflict`].
//! - [`reserve`], [`post`] and [`void`] are the two-phase holds used by generation jobs: reserved
//!   credits move from the user's wallet to the `pending_holds` system account, and leave it
//!   exactly once, to `generation_revenue` (posted) and/or back to the wallet.
//! - [`check_invariants`] verifies what the database also enforces (see the migrations: a
//!   wallet never negative, append-only transfers and entries, every transfer a balanced pair of
//!   entries (checked at commit), each wallet entry continuing its balance chain, a hold
//!   resolved once and matching its reserve transfer).
//!
//! Concurrency: a transfer locks only the user wallets it touches (system accounts cache no
//! balance, so they are no hot row), in account-id order; a hold's resolution locks the hold.

use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

mod history;
pub use history::{HistoryLine, HistoryPage, history, history_before, history_count, history_page};

pub type AccountId = i64;
pub type HoldId = i64;

/// The system accounts created by the ledger migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    SignupGrants,
    TopupSales,
    GenerationRevenue,
    Adjustments,
    PendingHolds,
}

impl System {
    pub fn code(self) -> &'static str {
        match self {
            System::SignupGrants => "signup_grants",
            System::TopupSales => "topup_sales",
            System::GenerationRevenue => "generation_revenue",
            System::Adjustments => "adjustments",
            System::PendingHolds => "pending_holds",
        }
    }
}

/// What a transfer is, for the user's history: the `kind` column of `ledger_transfer`
/// (`ledger_transfer_kind_check`). sqlx decodes the text directly; another value is a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Kind {
    SignupBonus,
    Hold,
    HoldPost,
    HoldRelease,
    Topup,
    Adjustment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SignupBonus => "signup_bonus",
            Kind::Hold => "hold",
            Kind::HoldPost => "hold_post",
            Kind::HoldRelease => "hold_release",
            Kind::Topup => "topup",
            Kind::Adjustment => "adjustment",
        }
    }
}

/// Links from a transfer to what it belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refs {
    pub run_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub payment_id: Option<Uuid>,
    pub hold_id: Option<HoldId>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient credits (need {need}, have {have})")]
    InsufficientCredits { need: i64, have: i64 },
    #[error("idempotency key {0:?} was already used for a different transfer")]
    KeyConflict(String),
    #[error("the amount must be positive (got {0})")]
    InvalidAmount(i64),
    #[error("hold {0} not found")]
    HoldNotFound(HoldId),
    #[error("hold {hold_id} is already {}", .status.as_str())]
    AlreadyResolved { hold_id: HoldId, status: HoldStatus },
    #[error("cannot post {amount} credits against a hold of {held}")]
    ExceedsHold { amount: i64, held: i64 },
    #[error("no wallet for user {0}")]
    NoWallet(Uuid),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub transfer_id: i64,
    pub key: String,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: i64,
    /// True when this call replayed an existing transfer instead of making a new one.
    pub replayed: bool,
}

/// A request to move `amount` credits from `debit` to `credit`.
#[derive(Debug, Clone)]
pub struct NewTransfer<'a> {
    pub key: &'a str,
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: i64,
    pub kind: Kind,
    pub memo: &'a str,
    pub refs: Refs,
}

/// The id of a system account.
pub async fn system_account(db: impl PgExecutor<'_>, system: System) -> Result<AccountId, LedgerError> {
    Ok(sqlx::query_scalar("SELECT account_id FROM ledger_account WHERE code = $1")
        .bind(system.code())
        .fetch_one(db)
        .await?)
}

/// The balance of a system account: the sum of its entries (system accounts cache none; the
/// ones that issue credits are negative).
pub async fn system_balance(db: impl PgExecutor<'_>, system: System) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(sum(e.amount), 0)::bigint FROM ledger_entry e
         JOIN ledger_account a USING (account_id) WHERE a.code = $1",
    )
    .bind(system.code())
    .fetch_one(db)
    .await?)
}

/// Opens the wallet of a new user (idempotent).
pub async fn open_wallet(db: &mut PgConnection, user_id: Uuid) -> Result<AccountId, LedgerError> {
    let id: Option<AccountId> = sqlx::query_scalar(
        "INSERT INTO ledger_account (kind, user_id, balance) VALUES ('user', $1, 0)
         ON CONFLICT (user_id) DO NOTHING RETURNING account_id",
    )
    .bind(user_id)
    .fetch_optional(&mut *db)
    .await?;
    match id {
        Some(id) => Ok(id),
        None => wallet(db, user_id).await,
    }
}

/// The wallet of a user.
pub async fn wallet(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<AccountId, LedgerError> {
    sqlx::query_scalar("SELECT account_id FROM ledger_account WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await?
        .ok_or(LedgerError::NoWallet(user_id))
}

/// Moves credits under an idempotency key. Runs in a savepoint, so a failure (not enough
/// credits, key conflict) leaves the caller's transaction usable and unchanged.
#[tracing::instrument(skip_all, fields(key = new.key, amount = new.amount))]
pub async fn transfer(db: &mut PgConnection, new: NewTransfer<'_>) -> Result<Transfer, LedgerError> {
    if new.amount <= 0 {
        return Err(LedgerError::InvalidAmount(new.amount));
    }
    let mut sp = sqlx::Connection::begin(&mut *db).await?;
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO ledger_transfer (idempotency_key, debit_account_id, credit_account_id, amount, kind, memo, hold_id, run_id, job_id, payment_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING transfer_id",
    )
    .bind(new.key)
    .bind(new.debit)
    .bind(new.credit)
    .bind(new.amount)
    .bind(new.kind)
    .bind(new.memo)
    .bind(new.refs.hold_id)
    .bind(new.refs.run_id)
    .bind(new.refs.job_id)
    .bind(new.refs.payment_id)
    .fetch_optional(&mut *sp)
    .await?;

    let Some(transfer_id) = inserted else {
        sp.rollback().await?;
        let existing: ExistingTransfer = sqlx::query_as(
            "SELECT transfer_id, debit_account_id, credit_account_id, amount, kind FROM ledger_transfer WHERE idempotency_key = $1",
        )
        .bind(new.key)
        .fetch_one(&mut *db)
        .await?;
        let ExistingTransfer { transfer_id, debit_account_id: debit, credit_account_id: credit, amount, kind } =
            existing;
        if (debit, credit, amount, kind) != (new.debit, new.credit, new.amount, new.kind) {
            return Err(LedgerError::KeyConflict(new.key.to_string()));
        }
        return Ok(Transfer { transfer_id, key: new.key.to_string(), debit, credit, amount, replayed: true });
    };

    // Only user wallets cache a balance (and are locked); system accounts are never updated,
    // so they are no hot row. An account's kind never changes (enforced by a trigger).
    let wallets: Vec<AccountId> =
        sqlx::query_scalar("SELECT account_id FROM ledger_account WHERE account_id IN ($1, $2) AND kind = 'user'")
            .bind(new.debit)
            .bind(new.credit)
            .fetch_all(&mut *sp)
            .await?;
    // Lock the two accounts in id order so opposite transfers cannot deadlock.
    let sides = if new.debit < new.credit {
        [(new.debit, -new.amount), (new.credit, new.amount)]
    } else {
        [(new.credit, new.amount), (new.debit, -new.amount)]
    };
    for (account_id, delta) in sides {
        let balance_after = if wallets.contains(&account_id) {
            match apply_to_wallet(&mut sp, account_id, delta).await? {
                Ok(balance) => Some(balance),
                Err(have) => {
                    sp.rollback().await?;
                    return Err(LedgerError::InsufficientCredits { need: new.amount, have });
                }
            }
        } else {
            None
        };
        sqlx::query(
            "INSERT INTO ledger_entry (transfer_id, account_id, amount, balance_after) VALUES ($1, $2, $3, $4)",
        )
        .bind(transfer_id)
        .bind(account_id)
        .bind(delta)
        .bind(balance_after)
        .execute(&mut *sp)
        .await?;
    }
    sp.commit().await?;
    Ok(Transfer {
        transfer_id,
        key: new.key.to_string(),
        debit: new.debit,
        credit: new.credit,
        amount: new.amount,
        replayed: false,
    })
}

/// The transfer already recorded under an idempotency key, to compare with a replayed request.
#[derive(Debug, FromRow)]
struct ExistingTransfer {
    transfer_id: i64,
    debit_account_id: AccountId,
    credit_account_id: AccountId,
    amount: i64,
    kind: Kind,
}

/// Adds `delta` to a wallet's cached balance, never below zero (also a CHECK). Returns the new
/// balance, or `Err(have)` when the wallet cannot cover it. The fast path is one conditional
/// UPDATE; when it refuses, the decision is re-made under the row lock, so the balance reported
/// is the one the refusal was based on (a concurrent refund may have made it sufficient).
/// `FOR NO KEY UPDATE`, the lock an UPDATE takes, not `FOR UPDATE`: the latter conflicts with
/// the key-share locks that inserting entries and transfers (foreign keys) hold on the wallet,
/// and two refused transfers on one wallet would deadlock.
async fn apply_to_wallet(
    db: &mut PgConnection,
    account_id: AccountId,
    delta: i64,
) -> Result<Result<i64, i64>, LedgerError> {
    let updated: Option<i64> = sqlx::query_scalar(
        "UPDATE ledger_account SET balance = balance + $2 WHERE account_id = $1 AND balance + $2 >= 0 RETURNING balance",
    )
    .bind(account_id)
    .bind(delta)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(balance) = updated {
        return Ok(Ok(balance));
    }
    let have: i64 = sqlx::query_scalar("SELECT balance FROM ledger_account WHERE account_id = $1 FOR NO KEY UPDATE")
        .bind(account_id)
        .fetch_one(&mut *db)
        .await?;
    if have + delta < 0 {
        return Ok(Err(have));
    }
    let balance: i64 =
        sqlx::query_scalar("UPDATE ledger_account SET balance = balance + $2 WHERE account_id = $1 RETURNING balance")
            .bind(account_id)
            .bind(delta)
            .fetch_one(&mut *db)
            .await?;
    Ok(Ok(balance))
}

/// Available (spendable) and held (reserved by pending holds) credits of a user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    pub available: i64,
    pub held: i64,
}

/// A user's wallet as [`balance`] reads it. The wallet's `balance` is never NULL (user
/// accounts always cache one: `ledger_account_owner_check`), so a NULL is a decode error.
#[derive(Debug, FromRow)]
struct BalanceRow {
    balance: i64,
    held: i64,
}

pub async fn balance(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Balance, LedgerError> {
    let row: BalanceRow = sqlx::query_as(
        "SELECT a.balance,
                COALESCE((SELECT sum(h.amount) FROM ledger_hold h WHERE h.account_id = a.account_id AND h.status = 'pending'), 0)::bigint AS held
         FROM ledger_account a WHERE a.user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?
    .ok_or(LedgerError::NoWallet(user_id))?;
    Ok(Balance { available: row.balance, held: row.held })
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Hold {
    pub hold_id: HoldId,
    pub account_id: AccountId,
    pub amount: i64,
    pub status: HoldStatus,
    pub posted_amount: Option<i64>,
    pub deadline: OffsetDateTime,
}

/// A hold's `status` column (`ledger_hold_resolution_check`). sqlx decodes the text directly;
/// another value is a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum HoldStatus {
    Pending,
    Posted,
    Voided,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Pending => "pending",
            HoldStatus::Posted => "posted",
            HoldStatus::Voided => "voided",
        }
    }
}

const HOLD_COLUMNS: &str = "hold_id, account_id, amount, status, posted_amount, deadline";

pub async fn get_hold(db: impl PgExecutor<'_>, hold_id: HoldId) -> Result<Hold, LedgerError> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM ledger_hold WHERE hold_id = $1");
    sqlx::query_as::<_, Hold>(sqlx::AssertSqlSafe(sql))
        .bind(hold_id)
        .fetch_optional(db)
        .await?
        .ok_or(LedgerError::HoldNotFound(hold_id))
}

/// Reserves `amount` credits of a user's wallet until `deadline`. Replaying `key` returns the
/// original hold; the same key with another user or amount is [`LedgerError::KeyConflict`].
/// The reserve transfer and the hold row are written in one transaction (a savepoint when the
/// caller is already in one), so a crash never leaves credits in `pending_holds` without a hold.
#[tracing::instrument(skip(db, deadline, memo, refs))]
pub async fn reserve(
    db: &mut PgConnection,
    user_id: Uuid,
    amount: i64,
    key: &str,
    deadline: OffsetDateTime,
    memo: &str,
    refs: Refs,
) -> Result<Hold, LedgerError> {
    let mut tx = sqlx::Connection::begin(&mut *db).await?;
    let wallet = wallet(&mut *tx, user_id).await?;
    let holds = system_account(&mut *tx, System::PendingHolds).await?;
    // The reserve transfer predates its hold: it never points at one.
    let refs = Refs { hold_id: None, ..refs };
    let transfer =
        transfer(&mut tx, NewTransfer { key, debit: wallet, credit: holds, amount, kind: Kind::Hold, memo, refs })
            .await?;
    let sql = format!(
        "INSERT INTO ledger_hold (account_id, amount, idempotency_key, reserve_transfer_id, deadline)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING {HOLD_COLUMNS}"
    );
    let inserted: Option<Hold> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(wallet)
        .bind(amount)
        .bind(key)
        .bind(transfer.transfer_id)
        .bind(deadline)
        .fetch_optional(&mut *tx)
        .await?;
    let hold = match inserted {
        Some(hold) => hold,
        None => {
            let sql = format!("SELECT {HOLD_COLUMNS} FROM ledger_hold WHERE idempotency_key = $1");
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(key).fetch_one(&mut *tx).await?
        }
    };
    tx.commit().await?;
    Ok(hold)
}

/// Charges `amount` (at most the held amount) and returns any remainder to the wallet.
/// Posting again with the same amount is a no-op that returns the hold; any other second
/// resolution is [`LedgerError::AlreadyResolved`]. A hold past its deadline can still be posted
/// until the sweeper voids it: the hold's row lock makes whichever comes first the only one.
#[tracing::instrument(skip(db, memo, refs))]
pub async fn post(
    db: &mut PgConnection,
    hold_id: HoldId,
    amount: i64,
    memo: &str,
    refs: Refs,
) -> Result<Hold, LedgerError> {
    Ok(resolve(db, hold_id, Resolution::Post(amount), memo, refs).await?.0)
}

/// Returns all of a pending hold to the wallet. Voiding a voided hold is a no-op.
#[tracing::instrument(skip(db, reason, refs))]
pub async fn void(db: &mut PgConnection, hold_id: HoldId, reason: &str, refs: Refs) -> Result<Hold, LedgerError> {
    Ok(resolve(db, hold_id, Resolution::Void, reason, refs).await?.0)
}

#[derive(Debug, Clone, Copy)]
enum Resolution {
    Post(i64),
    Void,
}

/// Resolves a hold; the flag says whether this call resolved it (false: an identical replay).
async fn resolve(
    db: &mut PgConnection,
    hold_id: HoldId,
    how: Resolution,
    memo: &str,
    refs: Refs,
) -> Result<(Hold, bool), LedgerError> {
    if let Resolution::Post(amount) = how
        && amount < 0
    {
        return Err(LedgerError::InvalidAmount(amount));
    }
    let mut tx = sqlx::Connection::begin(&mut *db).await?;
    // The row lock makes concurrent resolutions of one hold take turns; the status check (and the
    // table's trigger) lets exactly one of them win.
    let sql = format!("SELECT {HOLD_COLUMNS} FROM ledger_hold WHERE hold_id = $1 FOR UPDATE");
    let hold: Hold = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(hold_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(LedgerError::HoldNotFound(hold_id))?;
    if hold.status != HoldStatus::Pending {
        let same = match how {
            Resolution::Post(amount) => hold.status == HoldStatus::Posted && hold.posted_amount == Some(amount),
            Resolution::Void => hold.status == HoldStatus::Voided,
        };
        tx.rollback().await?;
        return if same {
            Ok((hold, false))
        } else {
            Err(LedgerError::AlreadyResolved { hold_id, status: hold.status })
        };
    }
    let (charge, status) = match how {
        Resolution::Post(amount) if amount > hold.amount => {
            tx.rollback().await?;
            return Err(LedgerError::ExceedsHold { amount, held: hold.amount });
        }
        Resolution::Post(amount) => (amount, HoldStatus::Posted),
        Resolution::Void => (0, HoldStatus::Voided),
    };
    let holds = system_account(&mut *tx, System::PendingHolds).await?;
    let refs = Refs { hold_id: Some(hold_id), ..refs };
    if charge > 0 {
        let revenue = system_account(&mut *tx, System::GenerationRevenue).await?;
        let key = format!("hold:{hold_id}:post");
        transfer(
            &mut tx,
            NewTransfer { key: &key, debit: holds, credit: revenue, amount: charge, kind: Kind::HoldPost, memo, refs },
        )
        .await?;
    }
    let remainder = hold.amount - charge;
    if remainder > 0 {
        let key = format!("hold:{hold_id}:release");
        transfer(
            &mut tx,
            NewTransfer {
                key: &key,
                debit: holds,
                credit: hold.account_id,
                amount: remainder,
                kind: Kind::HoldRelease,
                memo,
                refs,
            },
        )
        .await?;
    }
    let sql = format!(
        "UPDATE ledger_hold SET status = $2, posted_amount = $3, resolved_at = now(), reason = NULLIF($4, '')
         WHERE hold_id = $1 AND status = 'pending'
         RETURNING {HOLD_COLUMNS}"
    );
    let resolved: Hold = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(hold_id)
        .bind(status)
        .bind(matches!(how, Resolution::Post(_)).then_some(charge))
        .bind(memo)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((resolved, true))
}

/// Voids pending holds whose deadline has passed; returns how many this call voided (a hold
/// resolved concurrently by its job, or by another sweeper, is left as it is).
pub async fn sweep_expired(pool: &sqlx::PgPool) -> Result<u64, LedgerError> {
    const BATCH: i64 = 500;
    let mut voided = 0;
    let mut after: HoldId = 0;
    loop {
        let expired: Vec<HoldId> = sqlx::query_scalar(
            "SELECT hold_id FROM ledger_hold WHERE status = 'pending' AND deadline < now() AND hold_id > $1
             ORDER BY hold_id LIMIT $2",
        )
        .bind(after)
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        let Some(&last) = expired.last() else { break };
        after = last;
        for &hold_id in &expired {
            // One transaction per hold, begun safely (a bare connection's BEGIN is not).
            let mut tx = crate::db::begin(pool).await?;
            match resolve(
                &mut tx,
                hold_id,
                Resolution::Void,
                "expired: the hold outlived its deadline",
                Refs::default(),
            )
            .await
            {
                Ok((_, fresh)) => voided += u64::from(fresh),
                // Posted by its job in the meantime.
                Err(LedgerError::AlreadyResolved { .. }) => {}
                Err(err) => return Err(err),
            }
            tx.commit().await?;
        }
        if (expired.len() as i64) < BATCH {
            break;
        }
    }
    if voided > 0 {
        tracing::info!(voided, "voided expired holds");
    }
    Ok(voided)
}

/// How big the ledger is: what `faceoff admin check-ledger` reports next to the invariants, so
/// that a restore which lost rows (and so holds trivially) is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct Totals {
    pub accounts: i64,
    pub transfers: i64,
    pub holds: i64,
    pub pending_holds: i64,
    /// Credits available in user wallets (held credits sit in the `pending_holds` account).
    pub user_credits: i64,
}

/// Counts the ledger's rows (see [`Totals`]).
pub async fn totals(db: impl PgExecutor<'_>) -> Result<Totals, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger_account) AS accounts,
                (SELECT count(*) FROM ledger_transfer) AS transfers,
                (SELECT count(*) FROM ledger_hold) AS holds,
                (SELECT count(*) FROM ledger_hold WHERE status = 'pending') AS pending_holds,
                (SELECT COALESCE(sum(balance), 0)::bigint FROM ledger_account WHERE kind = 'user') AS user_credits",
    )
    .fetch_one(db)
    .await?)
}

/// What [`check_invariants`] found; empty `violations` means all is well.
#[derive(Debug, Default)]
pub struct InvariantReport {
    pub violations: Vec<String>,
}

impl InvariantReport {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks the ledger's invariants over the whole database, in one consistent snapshot (a
/// read-only repeatable-read transaction, unless the caller is already in a transaction):
/// entries sum to zero overall and per transfer, each transfer is -amount on its debit account
/// and +amount on its credit account, no wallet is negative, cached balances equal the sum of
/// their entries, the `pending_holds` account holds exactly the pending holds, and each
/// resolved hold moved exactly its amount out (its posted amount to revenue, the rest back).
pub async fn check_invariants(db: &mut PgConnection) -> Result<InvariantReport, LedgerError> {
    use sqlx::Connection;
    if db.is_in_transaction() {
        return invariants_in(db).await;
    }
    let mut tx = db.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let report = invariants_in(&mut tx).await;
    tx.rollback().await?;
    report
}

async fn invariants_in(db: &mut PgConnection) -> Result<InvariantReport, LedgerError> {
    let mut report = InvariantReport::default();
    let total: i64 =
        sqlx::query_scalar("SELECT COALESCE(sum(amount), 0)::bigint FROM ledger_entry").fetch_one(&mut *db).await?;
    if total != 0 {
        report.violations.push(format!("entries sum to {total}, not 0"));
    }
    let unbalanced: Vec<i64> = sqlx::query_scalar(
        "SELECT t.transfer_id FROM ledger_transfer t LEFT JOIN ledger_entry e USING (transfer_id)
         GROUP BY t.transfer_id, t.amount, t.debit_account_id, t.credit_account_id
         HAVING count(e.*) <> 2 OR COALESCE(sum(e.amount), 0) <> 0
             OR NOT COALESCE(bool_or(e.account_id = t.debit_account_id AND e.amount = -t.amount), false)
             OR NOT COALESCE(bool_or(e.account_id = t.credit_account_id AND e.amount = t.amount), false)",
    )
    .fetch_all(&mut *db)
    .await?;
    if !unbalanced.is_empty() {
        report.violations.push(format!("transfers without a balanced pair of entries: {unbalanced:?}"));
    }
    let negative: Vec<i64> =
        sqlx::query_scalar("SELECT account_id FROM ledger_account WHERE kind = 'user' AND balance < 0")
            .fetch_all(&mut *db)
            .await?;
    if !negative.is_empty() {
        report.violations.push(format!("negative user balances: {negative:?}"));
    }
    let drift: Vec<i64> = sqlx::query_scalar(
        "SELECT a.account_id FROM ledger_account a
         WHERE a.kind = 'user' AND a.balance <> COALESCE((SELECT sum(e.amount) FROM ledger_entry e WHERE e.account_id = a.account_id), 0)",
    )
    .fetch_all(&mut *db)
    .await?;
    if !drift.is_empty() {
        report.violations.push(format!("cached balances that differ from their entries: {drift:?}"));
    }
    // The pending_holds account holds exactly the pending holds.
    #[derive(FromRow)]
    struct HoldTotals {
        in_holds: i64,
        pending: i64,
    }
    let HoldTotals { in_holds, pending } = sqlx::query_as(
        "SELECT COALESCE((SELECT sum(e.amount) FROM ledger_entry e JOIN ledger_account a USING (account_id) WHERE a.code = 'pending_holds'), 0)::bigint AS in_holds,
                COALESCE((SELECT sum(amount) FROM ledger_hold WHERE status = 'pending'), 0)::bigint AS pending",
    )
    .fetch_one(&mut *db)
    .await?;
    if in_holds != pending {
        report.violations.push(format!("pending_holds account holds {in_holds} but pending holds total {pending}"));
    }
    // Each hold matches its reserve transfer; a pending hold has no resolution transfers; a
    // resolved one moved exactly its amount out: posted_amount to revenue, the rest to its wallet.
    let bad_holds: Vec<i64> = sqlx::query_scalar(
        "SELECT h.hold_id FROM ledger_hold h
         JOIN ledger_transfer r ON r.transfer_id = h.reserve_transfer_id
         LEFT JOIN LATERAL (
             SELECT COALESCE(sum(t.amount) FILTER (WHERE t.kind = 'hold_post'), 0) AS posted,
                    COALESCE(sum(t.amount) FILTER (WHERE t.kind = 'hold_release' AND t.credit_account_id = h.account_id), 0) AS released,
                    count(*) AS n
             FROM ledger_transfer t WHERE t.hold_id = h.hold_id
         ) res ON true
         WHERE r.amount <> h.amount OR r.debit_account_id <> h.account_id OR r.kind <> 'hold'
            OR (h.status = 'pending' AND res.n <> 0)
            OR (h.status = 'posted' AND (res.posted <> h.posted_amount OR res.released <> h.amount - h.posted_amount))
            OR (h.status = 'voided' AND (res.posted <> 0 OR res.released <> h.amount))",
    )
    .fetch_all(&mut *db)
    .await?;
    if !bad_holds.is_empty() {
        report.violations.push(format!("holds whose resolution does not match their transfers: {bad_holds:?}"));
    }
    Ok(report)
}
