//! `GET /account`, `POST /account/password` and `POST /account/sign-out-everywhere`.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use tower_sessions::Session;

use super::form_error;
use crate::{
    accounts::{self, api_keys, password},
    state::AppState,
    web::{AppError, CsrfForm, Layout, Result, Routes, SignedIn, render},
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
    notice: Option<String>,
    current_password_error: Option<String>,
    new_password_error: Option<String>,
    /// Active API keys: the password change and "sign out everywhere" offer to revoke them.
    active_keys: i64,
}

impl AccountPage {
    async fn new(state: &AppState, layout: Layout, user_id: uuid::Uuid) -> Result<Self> {
        let active_keys = api_keys::active_count(&state.pool, user_id).await?;
        Ok(AccountPage { layout, notice: None, current_password_error: None, new_password_error: None, active_keys })
    }
}

#[derive(Debug, Deserialize)]
struct NoticeQuery {
    notice: Option<String>,
}

fn account_notice(code: Option<&str>) -> Option<String> {
    let text = match code? {
        "email-verified" => "Your email address is confirmed. Thank you!",
        "email-changed" => "Your email address was changed.",
        "verification-sent" => "We sent a new confirmation link to your address.",
        "too-many-mails" => "We sent several links lately: wait a quarter of an hour before asking again.",
        _ => return None,
    };
    Some(text.to_string())
}

async fn account(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let mut page = AccountPage::new(&state, layout, user.id).await?;
    page.notice = account_notice(q.notice.as_deref());
    Ok(render(&page))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PasswordForm {
    current_password: String,
    new_password: String,
    /// The checkbox "also revoke my API keys" (ticked by default; absent when unticked).
    revoke_keys: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SignOutForm {
    revoke_keys: Option<String>,
}

/// Revokes the user's API keys when the form's checkbox asked for it; how many.
async fn revoke_keys_if_asked(state: &AppState, user_id: uuid::Uuid, asked: &Option<String>) -> Result<u64> {
    match asked {
        Some(_) => {
            let revoked = api_keys::revoke_all(&state.pool, user_id).await?;
            state.api_keys.forget_all();
            Ok(revoked)
        }
        None => Ok(0),
    }
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
    state.throttle.check_password_change(current.id).await?;
    let mut page = AccountPage::new(&state, layout, current.id).await?;
    page.new_password_error = password::validate(&form.new_password).err().map(String::from);
    let user = accounts::find_by_id(&state.pool, current.id).await?.ok_or(AppError::Unauthorized)?;
    if form.current_password.is_empty() {
        page.current_password_error = Some("enter your current password".into());
    } else if !password::verify(form.current_password, Some(user.password_hash)).await? {
        state.throttle.password_change_failed(user.id).await;
        page.current_password_error = Some("that is not your current password".into());
    } else {
        state.throttle.password_change_succeeded(user.id).await;
    }
    if page.current_password_error.is_some() || page.new_password_error.is_some() {
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let hash = password::hash(form.new_password).await?;
    accounts::set_password_hash(&state.pool, user.id, &hash).await?;
    // This browser stays signed in under a new session id; every other session ends.
    session.cycle_id().await?;
    let others = accounts::delete_sessions(&state.pool, user.id, None).await?;
    let revoked = revoke_keys_if_asked(&state, user.id, &form.revoke_keys).await?;
    tracing::info!(user_id = %user.id, others, revoked, "password changed");
    page.active_keys -= revoked as i64;
    page.notice = Some(match revoked {
        0 => "Your password was changed, and you were signed out everywhere else.".to_string(),
        n => format!(
            "Your password was changed, you were signed out everywhere else, and your {n} API key{} revoked.",
            if n == 1 { " was" } else { "s were" }
        ),
    });
    Ok(render(&page))
}

async fn sign_out_everywhere(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    session: Session,
    CsrfForm(form): CsrfForm<SignOutForm>,
) -> Result<Response> {
    let ended = accounts::delete_sessions(&state.pool, user.id, None).await?;
    let revoked = revoke_keys_if_asked(&state, user.id, &form.revoke_keys).await?;
    session.flush().await?;
    tracing::info!(user_id = %user.id, ended, revoked, "signed out everywhere");
    Ok(Redirect::to("/login?notice=signed-out-everywhere").into_response())
}
