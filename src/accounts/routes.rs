//! The account pages: `GET/POST /signup`, `GET/POST /login`, `POST /logout`, `GET /account`
//! (+ `POST /account/password`, `POST /account/sign-out-everywhere`) and `GET /admin`
//! (+ `POST /admin/adjust`).

use axum::{
    Form, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

use super::{
    SESSION_USER_KEY,
    admin::{self, AdjustError},
    password,
    rate_limit::Action,
};
use crate::{
    accounts::{self, CreateUserError, Role},
    ledger,
    state::AppState,
    web::{
        Result,
        client_ip::ClientIp,
        csrf::{self, session_error},
        error::AppError,
        layout::Layout,
        render,
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/signup", get(signup_form).post(signup))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/account", get(account))
        .route("/account/password", post(change_password))
        .route("/account/sign-out-everywhere", post(sign_out_everywhere))
        .route("/admin", get(admin_page))
        .route("/admin/adjust", post(admin_adjust))
}

/// Where to go after logging in: a local path only (`/…`, not `//…` or `/\…`, which browsers
/// treat as another host).
pub fn safe_next(next: Option<&str>) -> Option<String> {
    let next = next?.trim();
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && next.len() <= 2048;
    local.then(|| next.to_string())
}

fn next_query(next: &Option<String>) -> String {
    match next {
        Some(next) => format!("?next={}", url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()),
        None => String::new(),
    }
}

fn form_error(status: StatusCode, page: &impl askama::Template) -> Response {
    (status, render(page)).into_response()
}

/// Signs `user_id` in on this session: a new session id (the old one is deleted, so an id
/// planted or seen before log-in is useless) and a new CSRF token.
async fn sign_in(session: &Session, user_id: Uuid) -> Result<()> {
    session.cycle_id().await.map_err(session_error)?;
    csrf::reset(session).await?;
    session.insert(SESSION_USER_KEY, user_id).await.map_err(session_error)?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
    notice: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuthForm {
    email: String,
    password: String,
    csrf_token: String,
    next: String,
}

// ---- sign-up ----

#[derive(askama::Template)]
#[template(path = "accounts/signup.html")]
struct SignupPage {
    layout: Layout,
    signup_credits: i64,
    email: String,
    next: Option<String>,
    email_error: Option<String>,
    password_error: Option<String>,
}

impl SignupPage {
    fn login_link(&self) -> String {
        format!("/login{}", next_query(&self.next))
    }
}

async fn signup_form(State(state): State<AppState>, layout: Layout, Query(q): Query<NextQuery>) -> Result<Response> {
    let next = safe_next(q.next.as_deref());
    if layout.is_signed_in() {
        return Ok(Redirect::to(next.as_deref().unwrap_or("/")).into_response());
    }
    let page = SignupPage {
        layout: layout.with_csrf().await?,
        signup_credits: state.config.signup_credits,
        email: String::new(),
        next,
        email_error: None,
        password_error: None,
    };
    Ok(render(&page))
}

async fn signup(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    session: Session,
    layout: Layout,
    Form(form): Form<AuthForm>,
) -> Result<Response> {
    csrf::verify(&session, &form.csrf_token).await?;
    let email = accounts::normalize_email(&form.email);
    state.auth_limits.check(Action::Signup, client, &email)?;
    let mut page = SignupPage {
        layout: layout.with_csrf().await?,
        signup_credits: state.config.signup_credits,
        email: email.clone(),
        next: safe_next(Some(&form.next)),
        email_error: accounts::validate_email(&email).err().map(String::from),
        password_error: password::validate(&form.password).err().map(String::from),
    };
    if page.email_error.is_none() && accounts::find_by_email(&state.pool, &email).await?.is_some() {
        page.email_error = Some(EMAIL_TAKEN.into());
    }
    if page.email_error.is_some() || page.password_error.is_some() {
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let hash = password::hash(form.password).await?;
    let mut tx = crate::db::begin(&state.pool).await?;
    let user_id = match accounts::create_user(&mut tx, &email, &hash, Role::User, state.config.signup_credits).await {
        Ok(id) => id,
        // Someone signed up with this address since the check above.
        Err(CreateUserError::EmailTaken) => {
            page.email_error = Some(EMAIL_TAKEN.into());
            return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        Err(err) => return Err(AppError::Internal(err.into())),
    };
    tx.commit().await?;
    tracing::info!(%user_id, "new account");
    sign_in(&session, user_id).await?;
    Ok(Redirect::to(page.next.as_deref().unwrap_or("/")).into_response())
}

const EMAIL_TAKEN: &str = "an account with this email already exists; log in instead";

// ---- log-in / log-out ----

#[derive(askama::Template)]
#[template(path = "accounts/login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    next: Option<String>,
    notice: Option<&'static str>,
    email_error: Option<String>,
    password_error: Option<String>,
}

impl LoginPage {
    fn signup_link(&self) -> String {
        format!("/signup{}", next_query(&self.next))
    }
}

fn login_notice(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "signed-out-everywhere" => Some("You were signed out on every device. Log in again to continue."),
        "signed-out" => Some("You are signed out."),
        _ => None,
    }
}

async fn login_form(layout: Layout, Query(q): Query<NextQuery>) -> Result<Response> {
    let next = safe_next(q.next.as_deref());
    if layout.is_signed_in() {
        return Ok(Redirect::to(next.as_deref().unwrap_or("/")).into_response());
    }
    let page = LoginPage {
        layout: layout.with_csrf().await?,
        email: String::new(),
        next,
        notice: login_notice(q.notice.as_deref()),
        email_error: None,
        password_error: None,
    };
    Ok(render(&page))
}

async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    session: Session,
    layout: Layout,
    Form(form): Form<AuthForm>,
) -> Result<Response> {
    csrf::verify(&session, &form.csrf_token).await?;
    let email = accounts::normalize_email(&form.email);
    state.auth_limits.check(Action::Login, client, &email)?;
    let mut page = LoginPage {
        layout: layout.with_csrf().await?,
        email: email.clone(),
        next: safe_next(Some(&form.next)),
        notice: None,
        email_error: email.is_empty().then(|| "enter your email address".to_string()),
        password_error: form.password.is_empty().then(|| "enter your password".to_string()),
    };
    if page.email_error.is_some() || page.password_error.is_some() {
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let user = accounts::find_by_email(&state.pool, &email).await?;
    // Unknown emails are verified against a dummy hash: same work, same time, same answer.
    let verified = password::verify(form.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    match user {
        Some(user) if verified => {
            sign_in(&session, user.id).await?;
            Ok(Redirect::to(page.next.as_deref().unwrap_or("/")).into_response())
        }
        _ => {
            page.password_error = Some(INVALID_LOGIN.into());
            Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
    }
}

const INVALID_LOGIN: &str = "invalid email or password";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CsrfOnly {
    csrf_token: String,
}

async fn logout(session: Session, Form(form): Form<CsrfOnly>) -> Result<Response> {
    csrf::verify(&session, &form.csrf_token).await?;
    session.flush().await.map_err(session_error)?;
    Ok(Redirect::to("/").into_response())
}

// ---- the account page ----

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

async fn account(layout: Layout) -> Result<Response> {
    layout.require_user()?;
    Ok(render(&AccountPage::new(layout)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PasswordForm {
    current_password: String,
    new_password: String,
    csrf_token: String,
}

async fn change_password(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    session: Session,
    layout: Layout,
    Form(form): Form<PasswordForm>,
) -> Result<Response> {
    csrf::verify(&session, &form.csrf_token).await?;
    let current = layout.require_user()?.clone();
    // Guessing the current password from a borrowed session counts like log-in attempts.
    state.auth_limits.check(Action::Login, client, &current.email)?;
    let mut page = AccountPage::new(layout);
    page.new_password_error = password::validate(&form.new_password).err().map(String::from);
    let user = accounts::find_by_id(&state.pool, current.id).await?.ok_or(AppError::Unauthorized)?;
    if form.current_password.is_empty() {
        page.current_password_error = Some("enter your current password".into());
    } else if !password::verify(form.current_password, Some(user.password_hash)).await? {
        page.current_password_error = Some("that is not your current password".into());
    }
    if page.current_password_error.is_some() || page.new_password_error.is_some() {
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let hash = password::hash(form.new_password).await?;
    accounts::set_password_hash(&state.pool, user.id, &hash).await?;
    // This browser stays signed in under a new session id; every other session ends.
    session.cycle_id().await.map_err(session_error)?;
    let others = accounts::delete_sessions(&state.pool, user.id, None).await?;
    tracing::info!(user_id = %user.id, others, "password changed");
    page.notice = Some("Your password was changed, and you were signed out everywhere else.");
    Ok(render(&page))
}

async fn sign_out_everywhere(
    State(state): State<AppState>,
    session: Session,
    layout: Layout,
    Form(form): Form<CsrfOnly>,
) -> Result<Response> {
    csrf::verify(&session, &form.csrf_token).await?;
    let user = layout.require_user()?;
    let ended = accounts::delete_sessions(&state.pool, user.id, None).await?;
    session.flush().await.map_err(session_error)?;
    tracing::info!(user_id = %user.id, ended, "signed out everywhere");
    Ok(Redirect::to("/login?notice=signed-out-everywhere").into_response())
}

// ---- admin ----

struct FoundUser {
    email: String,
    role: &'static str,
    balance: ledger::Balance,
    history: Vec<ledger::HistoryLine>,
}

#[derive(askama::Template)]
#[template(path = "accounts/admin.html")]
struct AdminPage {
    layout: Layout,
    query: String,
    found: Option<FoundUser>,
    not_found: bool,
    amount: String,
    reason: String,
    idempotency_key: String,
    notice: Option<String>,
    amount_error: Option<String>,
    reason_error: Option<String>,
}

impl AdminPage {
    fn new(layout: Layout, query: String) -> Self {
        AdminPage {
            layout,
            query,
            found: None,
            not_found: false,
            amount: String::new(),
            reason: String::new(),
            idempotency_key: Uuid::new_v4().to_string(),
            notice: None,
            amount_error: None,
            reason_error: None,
        }
    }

    async fn look_up(&mut self, pool: &sqlx::PgPool) -> Result<()> {
        self.found = None;
        self.not_found = false;
        if self.query.is_empty() {
            return Ok(());
        }
        match accounts::find_by_email(pool, &self.query).await? {
            Some(user) => {
                let balance = ledger::balance(pool, user.id).await.map_err(|e| AppError::Internal(e.into()))?;
                let history = ledger::history(pool, user.id, 10, 0).await.map_err(|e| AppError::Internal(e.into()))?;
                self.query = user.email.clone();
                self.found = Some(FoundUser { email: user.email, role: user.role.as_str(), balance, history });
            }
            None => self.not_found = true,
        }
        Ok(())
    }
}

fn require_admin(layout: &Layout) -> Result<()> {
    if layout.require_user()?.is_admin() {
        Ok(())
    } else {
        Err(AppError::Forbidden("this page is for administrators only".into()))
    }
}

#[derive(Debug, Deserialize)]
struct AdminQuery {
    email: Option<String>,
}

async fn admin_page(State(state): State<AppState>, layout: Layout, Query(q): Query<AdminQuery>) -> Result<Response> {
    require_admin(&layout)?;
    let mut page = AdminPage::new(layout, q.email.as_deref().map(accounts::normalize_email).unwrap_or_default());
    page.look_up(&state.pool).await?;
    Ok(render(&page))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AdjustForm {
    email: String,
    amount: String,
    reason: String,
    idempotency_key: String,
    csrf_token: String,
}

async fn admin_adjust(
    State(state): State<AppState>,
    session: Session,
    layout: Layout,
    Form(form): Form<AdjustForm>,
) -> Result<Response> {
    csrf::verify(&session, &form.csrf_token).await?;
    require_admin(&layout)?;
    let mut page = AdminPage::new(layout, accounts::normalize_email(&form.email));
    page.amount = form.amount.trim().to_string();
    page.reason = form.reason.trim().to_string();
    let key = form.idempotency_key.trim();
    if !key.is_empty() && key.len() <= 100 {
        page.idempotency_key = key.to_string();
    }
    let amount = match page.amount.parse::<i64>() {
        Ok(n) if n != 0 && n.abs() <= admin::MAX_ADJUSTMENT => Some(n),
        _ => {
            page.amount_error =
                Some("enter a whole number of credits, not zero: positive adds, negative removes".into());
            None
        }
    };
    if page.reason.is_empty() {
        page.reason_error = Some("say why (it is shown in the user's credit history)".into());
    } else if page.reason.chars().count() > admin::MAX_REASON_CHARS {
        page.reason_error = Some(format!("keep the reason under {} characters", admin::MAX_REASON_CHARS));
    }
    let (Some(amount), None) = (amount, &page.reason_error) else {
        page.look_up(&state.pool).await?;
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    };
    let result = admin::adjust_credits(&state.pool, &page.query, amount, &page.reason, &page.idempotency_key).await;
    match result {
        Ok(done) => {
            let verb = if done.amount > 0 { "Added" } else { "Removed" };
            page.notice = Some(format!(
                "{verb} {} credits {} {}. Available balance now: {}.",
                done.amount.abs(),
                if done.amount > 0 { "to" } else { "from" },
                done.email,
                done.balance.available
            ));
            // The next adjustment is a new one.
            page.idempotency_key = Uuid::new_v4().to_string();
            page.amount.clear();
            page.reason.clear();
            page.look_up(&state.pool).await?;
            Ok(render(&page))
        }
        Err(AdjustError::Insufficient { need, have }) => {
            page.amount_error = Some(format!(
                "cannot remove {need} credits: the user has only {have} available (held credits excluded)"
            ));
            page.look_up(&state.pool).await?;
            Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        Err(err @ (AdjustError::UnknownUser(_) | AdjustError::KeyConflict)) => {
            page.amount_error = Some(err.to_string());
            page.idempotency_key = Uuid::new_v4().to_string();
            page.look_up(&state.pool).await?;
            Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        Err(err) => Err(AppError::Internal(err.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(safe_next(Some("/studio?models=a,b")).as_deref(), Some("/studio?models=a,b"));
        assert_eq!(safe_next(Some("/")).as_deref(), Some("/"));
        for bad in ["//evil.example", "https://evil.example", "evil", "/\\evil.example", "", "/a\nb"] {
            assert_eq!(safe_next(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(safe_next(None), None);
    }
}
