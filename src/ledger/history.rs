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

/// The history's select, with `$extra` columns after the line's own.
macro_rules! history_select {
    ($extra:literal) => {
        concat!(
            "SELECT e.entry_id, e.created_at, t.kind, t.memo, e.amount, e.balance_after AS balance_after,
                    t.run_id, t.job_id, t.payment_id,
                    (SELECT h.status FROM ledger_hold h WHERE h.reserve_transfer_id = t.transfer_id) AS hold_status",
            $extra,
            " FROM ledger_entry e
             JOIN ledger_transfer t USING (transfer_id)
             JOIN ledger_account a ON a.account_id = e.account_id"
        )
    };
}

const HISTORY_SELECT: &str = history_select!("");
/// [`HISTORY_SELECT`] with `total`: how many lines the `WHERE` clause selects in all.
const HISTORY_SELECT_COUNTED: &str = history_select!(", count(*) OVER () AS total");

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

/// The `page`-th page (from 1, clamped to the last) of a user's history, newest first, with the
/// number of lines in all: one statement (the count rides along as a window), and a second only
/// when `page` is past the end.
pub async fn history_page(
    db: &sqlx::PgPool,
    user_id: Uuid,
    page_size: i64,
    page: i64,
) -> Result<HistoryPage, LedgerError> {
    #[derive(FromRow)]
    struct Counted {
        #[sqlx(flatten)]
        line: HistoryLine,
        total: i64,
    }
    let page_size = page_size.max(1);
    let fetch = |page: i64| {
        let sql = format!("{HISTORY_SELECT_COUNTED} WHERE a.user_id = $1 ORDER BY e.entry_id DESC LIMIT $2 OFFSET $3");
        sqlx::query_as::<_, Counted>(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(page_size)
            .bind((page.max(1) - 1).saturating_mul(page_size))
            .fetch_all(db)
    };
    let mut rows = fetch(page).await?;
    let mut page = page.max(1);
    if rows.is_empty() && page > 1 {
        // Past the end (or the history is empty): the last page, after a count.
        let total = history_count(db, user_id).await?;
        page = ((total + page_size - 1) / page_size).max(1);
        rows = fetch(page).await?;
    }
    let total = rows.first().map_or(0, |r| r.total);
    Ok(HistoryPage {
        lines: rows.into_iter().map(|r| r.line).collect(),
        total,
        page,
        pages: ((total + page_size - 1) / page_size).max(1),
    })
}

/// One page of a user's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub lines: Vec<HistoryLine>,
    /// Lines in the whole history.
    pub total: i64,
    /// The page shown (from 1) and how many there are (at least 1).
    pub page: i64,
    pub pages: i64,
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
