//! Pages that belong to no single domain: the home page and robots.txt.

use axum::{Router, extract::State, routing::get};

use crate::{
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
}

async fn home(State(state): State<AppState>, layout: Layout) -> Result<axum::response::Response> {
    Ok(render(&HomePage { layout, signup_credits: state.config.signup_credits }))
}
