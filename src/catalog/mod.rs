//! The model catalog: providers, models, variants, prices per resolution mode, use cases and
//! editorial comparison content, loaded from `catalog/catalog.toml` and served from memory.

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
