//! The credits in the JSON API: `GET /api/v1/credits/history`, the wallet's lines (what the
//! `/credits` page shows), a page at a time.

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::{
    ledger::{self, HoldStatus, Kind},
    state::AppState,
    web::{
        ApiUser, Result, Routes,
        error::ApiError,
        pagination::{PageQuery, split_page},
    },
};

pub fn routes() -> Routes<AppState> {
    Routes::new().api(routes!(credit_history))
}

/// One line of the credit history.
#[derive(Serialize, ToSchema)]
#[schema(as = CreditLine)]
struct CreditLine {
    /// The line's id (ascending in time).
    #[schema(example = 1042)]
    id: i64,
    #[schema(format = DateTime)]
    created_at: String,
    kind: Kind,
    /// What the line was, in words.
    #[schema(example = "Run (reserved)")]
    label: &'static str,
    #[schema(example = "Run: Flux 2 (1080p / 2k), “a candid café portrait”")]
    memo: String,
    /// Signed: positive credits arrive, negative leave.
    #[schema(example = -22)]
    amount: i64,
    /// The available balance after this line.
    #[schema(example = 78)]
    balance_after: i64,
    run_id: Option<Uuid>,
    job_id: Option<Uuid>,
    payment_id: Option<Uuid>,
    /// For a run's reservation: whether it is still pending, was charged (posted) or refunded (voided).
    hold_status: Option<HoldStatus>,
}

/// A page of the credit history.
#[derive(Serialize, ToSchema)]
#[schema(as = CreditHistory)]
struct CreditHistory {
    /// Newest first.
    data: Vec<CreditLine>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Your credit history, newest first, a page at a time: sign-up grants, top-ups, reservations
/// for runs and their refunds, adjustments.
#[utoipa::path(
    get, path = "/api/v1/credits/history", tag = "account",
    params(PageQuery),
    responses(
        (status = 200, body = CreditHistory),
        (status = 400, description = "A cursor this list did not give out, or a malformed query.", body = ApiError),
        (status = 422, description = "`limit` outside 1–100.", body = ApiError),
    )
)]
async fn credit_history(
    State(state): State<AppState>,
    user: ApiUser,
    Query(query): Query<PageQuery>,
) -> Result<Json<CreditHistory>> {
    let limit = query.limit()?;
    let before = query.position(|text| text.parse::<i64>().ok())?;
    let lines = ledger::history_before(&state.pool, user.user_id, before, limit + 1).await?;
    let (lines, next_cursor) = split_page(lines, limit, |line| line.entry_id.to_string());
    let data = lines
        .into_iter()
        .map(|line| CreditLine {
            id: line.entry_id,
            created_at: line.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            kind: line.kind,
            label: line.label(),
            memo: line.memo.clone(),
            amount: line.amount,
            balance_after: line.balance_after,
            run_id: line.run_id,
            job_id: line.job_id,
            payment_id: line.payment_id,
            hold_status: line.hold_status,
        })
        .collect();
    Ok(Json(CreditHistory { data, next_cursor }))
}
