//! The home page (`GET /`): featured comparisons from the catalog, the field (makers, models,
//! comparisons by use case, board leaders: [`crate::catalog::pages::landing`]), how credits work, and the
//! sign-up call to action. It belongs to no single domain.

use axum::{extract::State, response::Response, routing::get};

use crate::{
    catalog::pages::{
        FeaturedComparison, featured_comparisons,
        landing::{HomeBlocks, home_blocks},
    },
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
}

async fn home(State(state): State<AppState>, layout: Layout) -> Result<Response> {
    let featured = featured_comparisons(&state, 3).await;
    let blocks = home_blocks(&state).await;
    Ok(render(&HomePage { layout, signup_credits: state.config.signup_credits, featured, blocks }))
}
