//! Storage: generated and uploaded images in an object store (local directory or S3), served at
//! `/media/{key}` with access control.

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
