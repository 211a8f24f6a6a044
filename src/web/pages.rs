//! Pages that belong to no single domain: the home page (with the featured comparisons from
//! the catalog).

use axum::{Router, extract::State, routing::get};

use crate::{
    catalog::{self, FeaturedComparison},
    state::AppState,
    web::{Result, layout::Layout, render},
};

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(home))
}

#[derive(askama::Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    signup_credits: i64,
    featured: Vec<FeaturedComparison>,
}

async fn home(State(state): State<AppState>, layout: Layout) -> Result<axum::response::Response> {
    let featured = catalog::featured_comparisons(&state, 3).await;
    Ok(render(&HomePage { layout, signup_credits: state.config.signup_credits, featured }))
}
