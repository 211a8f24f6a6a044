//! Payments: credit packs, checkout (Stripe or the sandbox) and the webhooks that fulfil them.

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
