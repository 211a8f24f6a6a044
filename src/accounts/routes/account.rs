//! `GET /account`, `POST /account/password` and `POST /account/sign-out-everywhere`.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use tower_sessions::Session;

use super::form_error;
use crate::{
    accounts::{self, password},
    state::AppState,
    web::{AppError, CsrfForm, Layout, Result, Routes, SignedIn, csrf::NoFields, render},
};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/account", get(account))
        .route("/account/password", post(change_password))
        .route("/account/sign-out-everywhere", post(sign_out_everywhere))
}

#[derive(askama::Template)]
#[template(path = "accounts/account.html")]
struct AccountPage {
    layout: Layout,
    notice: Option<&'static str>,
    current_password_error: Option<String>,
    new_password_error: Option<String>,
}

impl AccountPage {
    fn new(layout: Layout) -> Self {
        AccountPage { layout, notice: None, current_password_error: None, new_password_error: None }
    }
}

async fn account(SignedIn(_): SignedIn, layout: Layout) -> Result<Response> {
    Ok(render(&AccountPage::new(layout)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PasswordForm {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    SignedIn(current): SignedIn,
    session: Session,
    layout: Layout,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Result<Response> {
    // Guessing the current password from a borrowed session is throttled per user (and only
    // by this user's own failures, not by anyone's failed logins).
    state.throttle.check_password_change(current.id)?;
    let mut page = AccountPage::new(layout);
    page.new_password_error = password::validate(&form.new_password).err().map(String::from);
    let user = accounts::find_by_id(&state.pool, current.id).await?.ok_or(AppError::Unauthorized)?;
    if form.current_password.is_empty() {
        page.current_password_error = Some("enter your current password".into());
    } else if !password::verify(form.current_password, Some(user.password_hash)).await? {
        state.throttle.password_change_failed(user.id);
        page.current_password_error = Some("that is not your current password".into());
    } else {
        state.throttle.password_change_succeeded(user.id);
    }
    if page.current_password_error.is_some() || page.new_password_error.is_some() {
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let hash = password::hash(form.new_password).await?;
    accounts::set_password_hash(&state.pool, user.id, &hash).await?;
    // This browser stays signed in under a new session id; every other session ends.
    session.cycle_id().await?;
    let others = accounts::delete_sessions(&state.pool, user.id, None).await?;
    tracing::info!(user_id = %user.id, others, "password changed");
    page.notice = Some("Your password was changed, and you were signed out everywhere else.");
    Ok(render(&page))
}

async fn sign_out_everywhere(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    session: Session,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response> {
    let ended = accounts::delete_sessions(&state.pool, user.id, None).await?;
    session.flush().await?;
    tracing::info!(user_id = %user.id, ended, "signed out everywhere");
    Ok(Redirect::to("/login?notice=signed-out-everywhere").into_response())
}
