//! `GET/POST /signup`, `GET/POST /login` and `POST /logout`.

use axum::{
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use tower_sessions::Session;
use tower_sessions::cookie::{Cookie, SameSite};
use uuid::Uuid;

use super::form_error;
use crate::{
    accounts::{
        self, SESSION_USER_KEY,
        lifecycle::{self, SignUp},
        password,
        rate_limit::{DeviceCookie, LoginAttempt},
    },
    state::AppState,
    web::{
        CsrfForm, Layout, Result, Routes,
        client_ip::ClientIp,
        csrf::{NoFields, cookie_value},
        render,
    },
};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/signup", get(signup_form).post(signup))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
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

pub(super) fn next_query(next: &Option<String>) -> String {
    match next {
        Some(next) => format!("?next={}", url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()),
        None => String::new(),
    }
}

/// Signs `user_id` in on this session under a new session id (the old one is deleted, so an id
/// planted or seen before log-in is useless; CSRF tokens are bound to the user, so a token seen
/// before log-in is useless too), and answers with a redirect to `next` that gives the browser a
/// device cookie for this account unless it has a valid one (`device`).
async fn sign_in(
    state: &AppState,
    session: &Session,
    user_id: Uuid,
    email: &str,
    device: Option<[u8; 16]>,
    next: Option<&str>,
) -> Result<Response> {
    session.cycle_id().await?;
    session.insert(SESSION_USER_KEY, user_id).await?;
    let mut response = Redirect::to(next.unwrap_or("/")).into_response();
    if device.is_none() {
        let cookie = Cookie::build((DeviceCookie::NAME, DeviceCookie::issue(&state.device_key[..], email)))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(state.config.secure_cookies)
            .max_age(DeviceCookie::MAX_AGE)
            .build();
        if let Ok(value) = HeaderValue::from_str(&cookie.encoded().to_string()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// The device id of the browser's device cookie, if it is a valid one for `email`.
fn device_of(state: &AppState, headers: &HeaderMap, email: &str) -> Option<[u8; 16]> {
    DeviceCookie::verify(&state.device_key[..], cookie_value(headers, DeviceCookie::NAME)?, email)
}

/// An email address longer than any real one is refused before any limiter or database work.
fn too_long(email: &str) -> Option<String> {
    (email.chars().count() > accounts::MAX_EMAIL_CHARS).then(|| "that email address is too long".to_string())
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
    next: String,
}

// ---- sign-up ----

#[derive(askama::Template)]
#[template(path = "accounts/signup.html")]
struct SignupPage {
    layout: Layout,
    signup_credits: i64,
    /// Whether the free credits come when the address is confirmed (mail configured).
    credits_on_verification: bool,
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
        layout,
        signup_credits: state.config.signup_credits,
        credits_on_verification: state.config.mail.configured(),
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
    layout: Layout,
    CsrfForm(form): CsrfForm<AuthForm>,
) -> Result<Response> {
    let email = accounts::normalize_email(&form.email);
    if let Some(message) = too_long(&email) {
        let page = SignupPage {
            layout,
            signup_credits: state.config.signup_credits,
            credits_on_verification: state.config.mail.configured(),
            email: String::new(),
            next: safe_next(Some(&form.next)),
            email_error: Some(message),
            password_error: None,
        };
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    state.throttle.check_signup(client).await?;
    let page = SignupPage {
        layout,
        signup_credits: state.config.signup_credits,
        credits_on_verification: state.config.mail.configured(),
        email: email.clone(),
        next: safe_next(Some(&form.next)),
        email_error: accounts::validate_email(&email).err().map(String::from),
        password_error: password::validate(&form.password).err().map(String::from),
    };
    if page.email_error.is_some() || page.password_error.is_some() {
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    // The same work and the same answer whether or not the address has an account: the password
    // is hashed either way, and either way a mail goes to the address (a verification link, or
    // a note to the owner that someone tried to sign up with it).
    let hash = password::hash(form.password).await?;
    match lifecycle::sign_up(&state.pool, &state.config, &email, &hash).await? {
        SignUp::Created(user_id) => tracing::info!(%user_id, "new account"),
        SignUp::Existing => tracing::info!("sign-up with an address that has an account"),
    }
    Ok(Redirect::to(&format!("/signup/check-email{}", next_query(&page.next))).into_response())
}

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
        "password-reset" => Some("Your password was changed and every session ended. Log in with your new password."),
        "email-verified" => Some("Your email address is confirmed. Log in to continue."),
        "email-changed" => Some("Your email address was changed. Log in with your new address."),
        "account-deleted" => Some("Your account was deleted. A last message is on its way to your old address."),
        _ => None,
    }
}

async fn login_form(layout: Layout, Query(q): Query<NextQuery>) -> Result<Response> {
    let next = safe_next(q.next.as_deref());
    if layout.is_signed_in() {
        return Ok(Redirect::to(next.as_deref().unwrap_or("/")).into_response());
    }
    let page = LoginPage {
        layout,
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
    headers: HeaderMap,
    layout: Layout,
    CsrfForm(form): CsrfForm<AuthForm>,
) -> Result<Response> {
    let email = accounts::normalize_email(&form.email);
    let mut page = LoginPage {
        layout,
        email: email.clone(),
        next: safe_next(Some(&form.next)),
        notice: None,
        email_error: match email.is_empty() {
            true => Some("enter your email address".to_string()),
            false => too_long(&email),
        },
        password_error: form.password.is_empty().then(|| "enter your password".to_string()),
    };
    if page.email_error.is_some() || page.password_error.is_some() {
        page.email = page.email.chars().take(accounts::MAX_EMAIL_CHARS).collect();
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let device = device_of(&state, &headers, &email);
    let attempt = LoginAttempt { email: &email, address: client, device };
    state.throttle.check_login(&attempt).await?;
    let user = accounts::find_by_email(&state.pool, &email).await?;
    // Unknown emails are verified against a dummy hash: same work, same time, same answer.
    let verified = password::verify(form.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    match user {
        Some(user) if verified => {
            state.throttle.login_succeeded(&attempt).await;
            sign_in(&state, &session, user.id, &email, device, page.next.as_deref()).await
        }
        _ => {
            state.throttle.login_failed(&attempt).await;
            page.password_error = Some(INVALID_LOGIN.into());
            Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
    }
}

const INVALID_LOGIN: &str = "invalid email or password";

async fn logout(session: Session, CsrfForm(NoFields {}): CsrfForm<NoFields>) -> Result<Response> {
    session.flush().await?;
    Ok(Redirect::to("/").into_response())
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
