//! The mail-link flows' pages: `GET /signup/check-email`, `GET/POST /verify-email/{token}` (a
//! sign-up's verification link and an email change's confirmation link: the GET shows one
//! button, the POST uses the link, so link scanners that fetch it do not),
//! `POST /account/resend-verification`, `GET/POST /forgot-password`,
//! `GET/POST /reset-password/{token}`, `GET/POST /account/email`, `GET/POST /account/delete` and
//! `GET /account/export`.

use axum::{
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use tower_sessions::Session;

use super::form_error;
use crate::{
    accounts::{
        self, SESSION_USER_KEY,
        lifecycle::{self, ChangeRefused, DeleteRefused, DeletionSummary, Requested},
        password,
        tokens::{self, Purpose, Refused},
    },
    state::AppState,
    web::{AppError, CsrfForm, Layout, Result, Routes, SignedIn, client_ip::ClientIp, csrf::NoFields, render},
};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/signup/check-email", get(check_email))
        .route("/verify-email/{token}", get(confirm_link_page).post(verify_email))
        .route("/account/resend-verification", post(resend_verification))
        .route("/forgot-password", get(forgot_form).post(forgot))
        .route("/reset-password/{token}", get(reset_form).post(reset))
        .route("/account/email", get(email_form).post(change_email))
        .route("/account/delete", get(delete_form).post(delete))
        .route("/account/export", get(export))
}

// ---- "check your inbox" ----

#[derive(askama::Template)]
#[template(path = "accounts/check_email.html")]
struct CheckEmailPage {
    layout: Layout,
    heading: &'static str,
    message: &'static str,
    /// The log-in link (with where to go next).
    login: String,
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Where sign-up lands, whether or not the address already had an account.
async fn check_email(layout: Layout, Query(q): Query<NextQuery>) -> Result<Response> {
    let next = super::auth::safe_next(q.next.as_deref());
    Ok(render(&CheckEmailPage {
        layout,
        login: format!("/login{}", super::auth::next_query(&next)),
        heading: "Check your inbox",
        message: "We sent a message to the address you entered. Open the link in it to confirm your address and start comparing models. If you already have an account with this address, the message tells you how to get back in.",
    }))
}

// ---- links that do not work ----

#[derive(askama::Template)]
#[template(path = "accounts/link_refused.html")]
struct LinkRefusedPage {
    layout: Layout,
    message: &'static str,
    /// Where to get a new link (and its words).
    retry: (&'static str, &'static str),
}

fn refused_page(layout: Layout, refused: Refused, retry: (&'static str, &'static str)) -> Response {
    let status = match refused {
        Refused::Unknown => StatusCode::NOT_FOUND,
        Refused::Expired | Refused::Used => StatusCode::GONE,
    };
    (status, render(&LinkRefusedPage { layout, message: refused.message(), retry })).into_response()
}

// ---- verification and email change links ----

#[derive(askama::Template)]
#[template(path = "accounts/confirm_link.html")]
struct ConfirmLinkPage {
    layout: Layout,
    action: String,
    heading: &'static str,
    address: String,
    button: &'static str,
}

/// A verification or email-change link, opened: a page with one button that confirms (a POST),
/// so that mail scanners and link previews, which fetch links, do not use it up.
async fn confirm_link_page(
    State(state): State<AppState>,
    layout: Layout,
    Path(token): Path<String>,
) -> Result<Response> {
    let mut conn = state.pool.acquire().await?;
    let (purpose, heading, button) = match tokens::check(&mut conn, &token, Purpose::VerifyEmail).await? {
        Ok(valid) => (Ok(valid), "Confirm your email address", "Confirm my email address"),
        Err(Refused::Unknown) => (
            tokens::check(&mut conn, &token, Purpose::ChangeEmail).await?,
            "Confirm your new email address",
            "Confirm my new address",
        ),
        Err(refused) => (Err(refused), "", ""),
    };
    match purpose {
        Ok(valid) => Ok(render(&ConfirmLinkPage {
            layout,
            action: format!("/verify-email/{token}"),
            heading,
            address: valid.email,
            button,
        })),
        Err(refused) => Ok(refused_page(layout, refused, RESEND)),
    }
}

async fn verify_email(
    State(state): State<AppState>,
    session: Session,
    layout: Layout,
    Path(token): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response> {
    let signed_in = layout.user.as_ref().map(|u| u.id);
    match lifecycle::verify_email(&state.pool, &state.config, &token).await? {
        Ok(verified) => {
            // The link proves the mailbox: it signs its owner in (not over someone else's session).
            let to = match signed_in {
                Some(id) if id == verified.user_id => "/account?notice=email-verified",
                Some(_) => "/login?notice=email-verified",
                None => {
                    session.cycle_id().await?;
                    session.insert(SESSION_USER_KEY, verified.user_id).await?;
                    "/account?notice=email-verified"
                }
            };
            return Ok(Redirect::to(to).into_response());
        }
        Err(Refused::Unknown) => {}
        Err(refused) => return Ok(refused_page(layout, refused, RESEND)),
    }
    // Not a verification link: maybe an email change's.
    match lifecycle::confirm_email_change(&state.pool, &state.config, &token).await? {
        Ok(changed) => {
            let to = if signed_in == Some(changed.user_id) {
                "/account?notice=email-changed"
            } else {
                "/login?notice=email-changed"
            };
            Ok(Redirect::to(to).into_response())
        }
        Err(ChangeRefused::Link(refused)) => Ok(refused_page(layout, refused, RESEND)),
        Err(ChangeRefused::Taken) => {
            Err(AppError::Conflict("another account uses that address now, so yours was not changed".into()))
        }
    }
}

const RESEND: (&str, &str) = ("/account", "Go to your account to ask for a new link");

async fn resend_verification(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response> {
    let notice = match lifecycle::resend_verification(&state.pool, &state.config, user.id).await? {
        Requested::Sent => "verification-sent",
        Requested::AlreadyVerified => "email-verified",
        Requested::TooMany => "too-many-mails",
    };
    Ok(Redirect::to(&format!("/account?notice={notice}")).into_response())
}

// ---- forgot / reset password ----

#[derive(askama::Template)]
#[template(path = "accounts/forgot_password.html")]
struct ForgotPage {
    layout: Layout,
    email: String,
    email_error: Option<String>,
}

async fn forgot_form(layout: Layout) -> Result<Response> {
    Ok(render(&ForgotPage { layout, email: String::new(), email_error: None }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EmailForm {
    email: String,
}

async fn forgot(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    layout: Layout,
    CsrfForm(form): CsrfForm<EmailForm>,
) -> Result<Response> {
    let email = accounts::normalize_email(&form.email);
    if let Err(error) = accounts::validate_email(&email) {
        let email = email.chars().take(accounts::MAX_EMAIL_CHARS).collect();
        let page = ForgotPage { layout, email, email_error: Some(error.into()) };
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    state.throttle.check_signup(client).await?;
    lifecycle::request_password_reset(&state.pool, &state.config, &email).await?;
    Ok(render(&CheckEmailPage {
        layout,
        heading: "Check your inbox",
        message: "If an account uses that address, we sent it a link to choose a new password. The link works once, for an hour.",
        login: "/login".into(),
    }))
}

#[derive(askama::Template)]
#[template(path = "accounts/reset_password.html")]
struct ResetPage {
    layout: Layout,
    action: String,
    password_error: Option<String>,
    active_keys: i64,
}

async fn reset_form(State(state): State<AppState>, layout: Layout, Path(token): Path<String>) -> Result<Response> {
    let mut conn = state.pool.acquire().await?;
    match tokens::check(&mut conn, &token, Purpose::ResetPassword).await? {
        Ok(valid) => {
            let active_keys = accounts::api_keys::active_count(&mut *conn, valid.user_id).await?;
            Ok(render(&ResetPage {
                layout,
                action: format!("/reset-password/{token}"),
                password_error: None,
                active_keys,
            }))
        }
        Err(refused) => Ok(refused_page(layout, refused, FORGOT)),
    }
}

const FORGOT: (&str, &str) = ("/forgot-password", "Ask for a new link");

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResetForm {
    password: String,
    revoke_keys: Option<String>,
}

async fn reset(
    State(state): State<AppState>,
    layout: Layout,
    Path(token): Path<String>,
    CsrfForm(form): CsrfForm<ResetForm>,
) -> Result<Response> {
    if let Err(error) = password::validate(&form.password) {
        let mut conn = state.pool.acquire().await?;
        let active_keys = match tokens::check(&mut conn, &token, Purpose::ResetPassword).await? {
            Ok(valid) => accounts::api_keys::active_count(&mut *conn, valid.user_id).await?,
            Err(refused) => return Ok(refused_page(layout, refused, FORGOT)),
        };
        let page = ResetPage {
            layout,
            action: format!("/reset-password/{token}"),
            password_error: Some(error.into()),
            active_keys,
        };
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    if !accounts::tokens::looks_like_token(&token) {
        return Ok(refused_page(layout, Refused::Unknown, FORGOT));
    }
    let hash = password::hash(form.password).await?;
    match lifecycle::reset_password(&state.pool, &token, &hash, form.revoke_keys.is_some()).await? {
        Ok(reset) => {
            if reset.keys_revoked > 0 {
                state.api_keys.forget_all();
            }
            Ok(Redirect::to("/login?notice=password-reset").into_response())
        }
        Err(refused) => Ok(refused_page(layout, refused, FORGOT)),
    }
}

// ---- email change ----

#[derive(askama::Template)]
#[template(path = "accounts/change_email.html")]
struct ChangeEmailPage {
    layout: Layout,
    notice: Option<String>,
    email: String,
    email_error: Option<String>,
    password_error: Option<String>,
}

async fn email_form(SignedIn(_): SignedIn, layout: Layout) -> Result<Response> {
    Ok(render(&ChangeEmailPage { layout, notice: None, email: String::new(), email_error: None, password_error: None }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChangeEmailForm {
    email: String,
    password: String,
}

/// Checks the signed-in user's password (throttled per user, like the password change).
async fn password_ok(state: &AppState, user_id: uuid::Uuid, given: String) -> Result<Option<&'static str>> {
    state.throttle.check_password_change(user_id).await?;
    let user = accounts::find_by_id(&state.pool, user_id).await?.ok_or(AppError::Unauthorized)?;
    if given.is_empty() {
        return Ok(Some("enter your password"));
    }
    if password::verify(given, Some(user.password_hash)).await? {
        state.throttle.password_change_succeeded(user_id).await;
        Ok(None)
    } else {
        state.throttle.password_change_failed(user_id).await;
        Ok(Some("that is not your password"))
    }
}

async fn change_email(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    CsrfForm(form): CsrfForm<ChangeEmailForm>,
) -> Result<Response> {
    let email = accounts::normalize_email(&form.email);
    let mut page = ChangeEmailPage {
        layout,
        notice: None,
        email: email.chars().take(accounts::MAX_EMAIL_CHARS).collect(),
        email_error: accounts::validate_email(&email).err().map(String::from),
        password_error: None,
    };
    if page.email_error.is_none() && email.eq_ignore_ascii_case(&user.email) {
        page.email_error = Some("that is already your address".into());
    }
    if page.email_error.is_none() {
        page.password_error = password_ok(&state, user.id, form.password).await?.map(String::from);
    }
    if page.email_error.is_some() || page.password_error.is_some() {
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    match lifecycle::request_email_change(&state.pool, &state.config, user.id, &email).await? {
        Requested::TooMany => {
            page.email_error = Some("we sent several links lately; wait a quarter of an hour and try again".into());
            Ok(form_error(StatusCode::TOO_MANY_REQUESTS, &page))
        }
        Requested::Sent | Requested::AlreadyVerified => {
            page.notice = Some(format!(
                "We sent a link to {email}. Your address changes when you open it (within 24 hours); until then you keep using your current one."
            ));
            page.email = String::new();
            Ok(render(&page))
        }
    }
}

// ---- deletion and export ----

#[derive(askama::Template)]
#[template(path = "accounts/delete.html")]
struct DeletePage {
    layout: Layout,
    summary: DeletionSummary,
    password_error: Option<String>,
    confirm_error: Option<String>,
}

async fn delete_form(State(state): State<AppState>, SignedIn(user): SignedIn, layout: Layout) -> Result<Response> {
    let summary = lifecycle::deletion_summary(&state.pool, user.id).await?;
    Ok(render(&DeletePage { layout, summary, password_error: None, confirm_error: None }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeleteForm {
    password: String,
    confirm: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    session: Session,
    layout: Layout,
    CsrfForm(form): CsrfForm<DeleteForm>,
) -> Result<Response> {
    let summary = lifecycle::deletion_summary(&state.pool, user.id).await?;
    let mut page = DeletePage { layout, summary, password_error: None, confirm_error: None };
    if form.confirm.is_none() {
        page.confirm_error = Some("tick the box to confirm that everything listed above will be deleted".into());
    }
    page.password_error = password_ok(&state, user.id, form.password).await?.map(String::from);
    if page.password_error.is_some() || page.confirm_error.is_some() {
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    match lifecycle::delete_account(&state.pool, &state.store, user.id).await? {
        Ok(()) => {
            state.api_keys.forget_all();
            session.flush().await?;
            Ok(Redirect::to("/login?notice=account-deleted").into_response())
        }
        Err(DeleteRefused::Busy) => Err(AppError::Conflict(
            "some of your generations are still running; wait until they finish, then delete your account".into(),
        )),
        Err(DeleteRefused::Gone) => Err(AppError::Unauthorized),
    }
}

async fn export(State(state): State<AppState>, SignedIn(user): SignedIn) -> Result<Response> {
    let document = lifecycle::export(&state.pool, &state.config, user.id).await?;
    let body = serde_json::to_vec_pretty(&document).map_err(|err| AppError::Internal(err.into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"faceoff-export.json\""),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
