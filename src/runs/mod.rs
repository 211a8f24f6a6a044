//! Runs: one prompt sent to 2–4 models, the studio form, the run pages and their live updates.

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
