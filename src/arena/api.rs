//! `GET /api/v1/leaderboard` and `GET /api/v1/leaderboard/{use_case}`: a board's newest
//! snapshot as JSON (public: no key needed).

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::{
    board::{self, ALL, Entry},
    pages::board_title,
};
use crate::{
    state::AppState,
    web::{AppError, Result, Routes, error::ApiError},
};

pub fn routes() -> Routes<AppState> {
    Routes::new().api(routes!(leaderboard_all)).api(routes!(leaderboard_board))
}

/// A board's newest snapshot.
#[derive(Serialize, ToSchema)]
#[schema(as = Leaderboard)]
struct Board {
    /// `all`, a use case's slug, `other`, or `demo` (sandbox renderings, never real models).
    #[schema(example = "portrait")]
    board: String,
    #[schema(example = "Portrait")]
    name: String,
    /// When the snapshot was computed (RFC 3339); null before the first one.
    #[schema(format = DateTime)]
    computed_at: Option<String>,
    /// Votes the snapshot counted, and votes the trust rules held back.
    counted_votes: i64,
    excluded_votes: i64,
    /// Bootstrap refits behind the intervals.
    bootstrap: i32,
    /// Votes an entry needs before it is ranked (below: `provisional`).
    min_votes: u64,
    /// Position check: decisive two-way votes, and how many the image shown first won (without
    /// a position bias about half).
    decisive_votes: i64,
    first_won: i64,
    /// Entries by rating, highest first.
    entries: Vec<Entry>,
}

async fn board_json(state: &AppState, board: &str) -> Result<Json<Board>> {
    let catalog = state.catalog.current();
    let name = board_title(&catalog, board).ok_or_else(|| AppError::NotFound("there is no such leaderboard".into()))?;
    let latest = board::latest(state.read_pool.get(), board).await?;
    let (snapshot, entries) = match latest {
        Some((s, e)) => (Some(s), e),
        None => (None, Vec::new()),
    };
    Ok(Json(Board {
        board: board.to_string(),
        name,
        computed_at: snapshot
            .as_ref()
            .and_then(|s| s.computed_at.format(&time::format_description::well_known::Rfc3339).ok()),
        counted_votes: snapshot.as_ref().map_or(0, |s| s.counted_votes),
        excluded_votes: snapshot.as_ref().map_or(0, |s| s.excluded_votes),
        bootstrap: snapshot.as_ref().map_or(state.config.arena.bootstrap as i32, |s| s.bootstrap),
        min_votes: state.config.arena.min_votes,
        decisive_votes: snapshot.as_ref().map_or(0, |s| s.decisive_votes),
        first_won: snapshot.as_ref().map_or(0, |s| s.first_won),
        entries,
    }))
}

/// The leaderboard of every use case: Bradley–Terry ratings from blind votes with 95%
/// bootstrap intervals, ranks, votes, win rates, prices, cost per win and median times.
#[utoipa::path(get, path = "/api/v1/leaderboard", tag = "arena", security(()), responses((status = 200, body = Board)))]
async fn leaderboard_all(State(state): State<AppState>) -> Result<Json<Board>> {
    board_json(&state, ALL).await
}

/// One use case's leaderboard (`other` for runs of no listed use case, `demo` for sandbox
/// renderings).
#[utoipa::path(
    get, path = "/api/v1/leaderboard/{use_case}", tag = "arena", security(()),
    params(("use_case" = String, Path, description = "A use case's slug, `other` or `demo`.", example = "portrait")),
    responses((status = 200, body = Board), (status = 404, description = "No such board.", body = ApiError))
)]
async fn leaderboard_board(State(state): State<AppState>, Path(use_case): Path<String>) -> Result<Json<Board>> {
    board_json(&state, &use_case).await
}
