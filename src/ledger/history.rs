//! A user's credit history: one line per entry on their wallet, newest first.

use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{HoldStatus, Kind, LedgerError};

#[derive(Debug, Clone, FromRow)]
pub struct HistoryLine {
    pub entry_id: i64,
    pub created_at: OffsetDateTime,
    pub kind: Kind,
    pub memo: String,
    /// Signed: positive credits arrive, negative leave.
    pub amount: i64,
    pub balance_after: i64,
    pub run_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub payment_id: Option<Uuid>,
    /// For a hold line (the transfer that reserved it): where the hold stands now.
    pub hold_status: Option<HoldStatus>,
}

impl HistoryLine {
    /// What the line was, in words.
    pub fn label(&self) -> &'static str {
        match self.kind {
            Kind::SignupBonus => "Sign-up bonus",
            Kind::Hold => match self.hold_status {
                Some(HoldStatus::Pending) => "Run (reserved)",
                Some(HoldStatus::Voided) => "Run (reserved, then refunded)",
                Some(HoldStatus::Posted) | None => "Run",
            },
            Kind::HoldRelease => "Refund",
            Kind::Topup => "Top-up",
            Kind::Adjustment => "Adjustment",
            // Posting moves credits from pending_holds to revenue: never a line on a wallet.
            Kind::HoldPost => "Other",
        }
    }
}

const HISTORY_SELECT: &str =
    "SELECT e.entry_id, e.created_at, t.kind, t.memo, e.amount, e.balance_after AS balance_after,
                t.run_id, t.job_id, t.payment_id,
                (SELECT h.status FROM ledger_hold h WHERE h.reserve_transfer_id = t.transfer_id) AS hold_status
         FROM ledger_entry e
         JOIN ledger_transfer t USING (transfer_id)
         JOIN ledger_account a ON a.account_id = e.account_id";

pub async fn history(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<Vec<HistoryLine>, LedgerError> {
    let sql = format!("{HISTORY_SELECT} WHERE a.user_id = $1 ORDER BY e.entry_id DESC LIMIT $2 OFFSET $3");
    Ok(sqlx::query_as::<_, HistoryLine>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(db)
        .await?)
}

/// A page of a user's history, newest first, with entries older than `before` (the last entry
/// id of the previous page: keyset pagination).
pub async fn history_before(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<HistoryLine>, LedgerError> {
    let sql = format!(
        "{HISTORY_SELECT} WHERE a.user_id = $1 AND ($2::bigint IS NULL OR e.entry_id < $2)
         ORDER BY e.entry_id DESC LIMIT $3"
    );
    Ok(sqlx::query_as::<_, HistoryLine>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(before)
        .bind(limit)
        .fetch_all(db)
        .await?)
}

pub async fn history_count(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM ledger_entry e JOIN ledger_account a ON a.account_id = e.account_id WHERE a.user_id = $1",
    )
    .bind(user_id)
    .fetch_one(db)
    .await?)
}
