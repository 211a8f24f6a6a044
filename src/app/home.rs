//! The home page (`GET /`): featured comparisons from the catalog, the field (makers, models,
//! comparisons by use case, board leaders: [`crate::catalog::pages::landing`]), the runs people
//! shared most recently ([`crate::sharing`]), how credits work, and the sign-up call to action.
//! It belongs to no single domain.

use axum::{extract::State, response::Response, routing::get};

use crate::{
    catalog::pages::{
        FeaturedComparison, featured_comparisons,
        landing::{HomeBlocks, home_blocks},
    },
    sharing::GalleryEntry,
    state::AppState,
    web::{Layout, Result, Routes, render},
};

pub fn routes() -> Routes<AppState> {
    Routes::new().route("/", get(home))
}

#[derive(askama::Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    signup_credits: i64,
    featured: Vec<FeaturedComparison>,
    blocks: HomeBlocks,
    /// The newest shared runs (the block is left out when there are none).
    gallery: Vec<GalleryEntry>,
}

/// How many shared runs the home page shows.
const SHARED_RUNS: i64 = 4;

async fn home(State(state): State<AppState>, layout: Layout) -> Result<Response> {
    let featured = featured_comparisons(&state, 3).await;
    let blocks = home_blocks(&state).await;
    let gallery = recently_shared(&state).await;
    Ok(render(&HomePage { layout, signup_credits: state.config.signup_credits, featured, blocks, gallery }))
}

/// The newest shared runs; none (the block is left out) when the database cannot be read.
async fn recently_shared(state: &AppState) -> Vec<GalleryEntry> {
    let entries = async {
        let rows = crate::sharing::recent(&state.pool, None, SHARED_RUNS).await?;
        crate::sharing::gallery_entries(&state.pool, &rows).await
    }
    .await;
    entries.unwrap_or_else(|err| {
        tracing::warn!("home page: shared runs: {err}");
        Vec::new()
    })
}
