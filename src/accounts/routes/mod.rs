//! The account pages: sign-up, log-in and log-out ([`auth`]), the account page with the password
//! change and "sign out everywhere" ([`account`]), personal API keys ([`api_keys`]), the
//! administrators' page ([`admin`]) and the mail-link flows: verification, password reset,
//! email change, deletion and export ([`lifecycle`]).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{
    state::AppState,
    web::{Routes, render},
};

mod account;
mod admin;
mod api_keys;
mod auth;
mod lifecycle;

pub use auth::safe_next;

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .merge(auth::routes())
        .merge(account::routes())
        .merge(api_keys::routes())
        .merge(admin::routes())
        .merge(lifecycle::routes())
}

/// A form page answered with `status` (422 when the form needs correcting).
fn form_error(status: StatusCode, page: &impl askama::Template) -> Response {
    (status, render(page)).into_response()
}
