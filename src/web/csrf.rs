//! CSRF protection for forms, without storing anything per visitor.
//!
//! Each browser gets a random nonce in the `faceoff_csrf` cookie (HttpOnly, SameSite=Lax), set
//! by [`middleware`] only on responses that rendered a form. A form's token is the HMAC-SHA256,
//! under the site's signing key (shared by every instance through the database), of that nonce
//! and the signed-in user's id (empty for visitors): a signed double-submit cookie bound to the
//! user, as OWASP recommends. Another site can neither read the cookie nor compute a token; a
//! token seen before log-in is worthless after it; visitors' forms (sign-up, log-in) need no
//! session row.
//!
//! Handlers never check tokens themselves: [`CsrfForm`] (URL-encoded forms) and
//! [`CsrfMultipart`] (the studio's upload form) refuse a missing or wrong `csrf_token` with
//! [`AppError::CsrfFailed`] before the handler runs.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    body::Bytes,
    extract::{FromRef, FromRequest, FromRequestParts, Multipart, Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::Response,
};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, de::DeserializeOwned};
use sha2::Sha256;
use sqlx::PgPool;
use tower_sessions::cookie::{Cookie, SameSite};
use uuid::Uuid;

use crate::web::{
    auth::Viewer,
    error::AppError,
    input::{check_form_body, check_text},
};

/// The cookie holding the browser's nonce.
pub const COOKIE: &str = "faceoff_csrf";
/// The form field every state-changing form carries.
pub const FIELD: &str = "csrf_token";
const NONCE_BYTES: usize = 32;
/// How long a browser keeps its nonce (it grants nothing on its own).
const COOKIE_MAX_AGE: time::Duration = time::Duration::days(365);

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The key tokens are signed with.
#[derive(Clone)]
pub struct CsrfKey(Arc<[u8; 32]>);

impl CsrfKey {
    pub fn new(key: [u8; 32]) -> Self {
        CsrfKey(Arc::new(key))
    }
}

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(***)")
    }
}

/// What [`middleware`] needs.
#[derive(Clone, Debug)]
pub struct CsrfSettings {
    pub key: CsrfKey,
    /// Mark the cookie `Secure` (behind HTTPS).
    pub secure: bool,
}

/// This request's CSRF state, in the request extensions (put there by [`middleware`]).
#[derive(Clone)]
pub struct CsrfContext {
    key: CsrfKey,
    nonce: Arc<str>,
    /// The browser sent no (valid) nonce: nothing it submits can verify, and the new nonce is
    /// sent back if the response renders a token.
    fresh: bool,
    issued: Arc<AtomicBool>,
}

impl CsrfContext {
    fn new(key: CsrfKey, cookie: Option<&str>) -> Self {
        let (nonce, fresh) = match cookie.filter(|v| is_nonce(v)) {
            Some(value) => (Arc::from(value), false),
            None => (Arc::from(b64().encode(rand::random::<[u8; NONCE_BYTES]>()).as_str()), true),
        };
        CsrfContext { key, nonce, fresh, issued: Arc::new(AtomicBool::new(false)) }
    }

    fn mac(&self, user: Option<Uuid>) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key.0[..]).unwrap_or_else(|_| unreachable!());
        mac.update(b"faceoff-csrf\0");
        mac.update(self.nonce.as_bytes());
        mac.update(b"\0");
        if let Some(user) = user {
            mac.update(user.as_bytes());
        }
        mac
    }

    /// The token for a form shown to `user` (`None`: a visitor). Rendering one makes the
    /// response carry the nonce cookie when the browser has none yet.
    pub fn token_for(&self, user: Option<Uuid>) -> String {
        self.issued.store(true, Ordering::Relaxed);
        b64().encode(self.mac(user).finalize().into_bytes())
    }

    /// Checks a submitted token (in constant time).
    pub fn verify(&self, user: Option<Uuid>, submitted: &str) -> Result<(), AppError> {
        if self.fresh || submitted.is_empty() {
            return Err(AppError::CsrfFailed);
        }
        let bytes = b64().decode(submitted.trim()).map_err(|_| AppError::CsrfFailed)?;
        self.mac(user).verify_slice(&bytes).map_err(|_| AppError::CsrfFailed)
    }
}

fn is_nonce(value: &str) -> bool {
    value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Middleware: gives each request its [`CsrfContext`] and sets the nonce cookie on responses
/// that rendered a token for a browser that had none.
pub async fn middleware(State(settings): State<CsrfSettings>, mut req: Request, next: Next) -> Response {
    let context = CsrfContext::new(settings.key.clone(), cookie_value(req.headers(), COOKIE));
    req.extensions_mut().insert(context.clone());
    let mut response = next.run(req).await;
    if context.fresh && context.issued.load(Ordering::Relaxed) {
        let cookie = Cookie::build((COOKIE, context.nonce.to_string()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(settings.secure)
            .max_age(COOKIE_MAX_AGE)
            .build();
        if let Ok(value) = HeaderValue::from_str(&cookie.encoded().to_string()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for CsrfContext {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CsrfContext>()
            .cloned()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the CSRF middleware is not installed")))
    }
}

use axum::http::request::Parts;

/// Checks the token of the request's viewer (loaded once per request).
async fn verify<S>(parts: &mut Parts, state: &S, submitted: &str) -> Result<(), AppError>
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    let context = CsrfContext::from_request_parts(parts, state).await?;
    let viewer = Viewer::from_request_parts(parts, state).await?;
    context.verify(viewer.user_id(), submitted)
}

#[derive(Deserialize, Default)]
struct TokenField {
    #[serde(default)]
    csrf_token: String,
}

/// A URL-encoded form whose `csrf_token` was checked before the handler runs (the token field
/// itself is not part of `T`).
#[derive(Debug, Clone)]
pub struct CsrfForm<T>(pub T);

impl<S, T> FromRequest<S> for CsrfForm<T>
where
    T: DeserializeOwned,
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|rejection| AppError::rejected(rejection.status(), rejection.body_text()))?;
        let token = if is_form {
            serde_urlencoded::from_bytes::<TokenField>(&bytes).unwrap_or_default()
        } else {
            TokenField::default()
        };
        verify(&mut parts, state, &token.csrf_token).await?;
        if !is_form {
            return Err(AppError::UnsupportedMediaType);
        }
        check_form_body(&bytes, "the form")?;
        serde_urlencoded::from_bytes::<T>(&bytes)
            .map(CsrfForm)
            .map_err(|err| AppError::BadRequest(format!("the form could not be read: {err}")))
    }
}

/// A form whose only field is its token (buttons such as "Log out").
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct NoFields {}

/// A form read from `multipart/form-data`: its text fields and its files.
#[derive(Debug, Default)]
pub struct MultipartFields {
    pub text: Vec<(String, String)>,
    pub files: Vec<UploadedFile>,
}

#[derive(Debug)]
pub struct UploadedFile {
    pub field: String,
    pub file_name: Option<String>,
    pub bytes: Bytes,
}

impl MultipartFields {
    /// The first value of a text field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.text.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The most fields and the largest text field a multipart form may have.
const MAX_FIELDS: usize = 64;
const MAX_TEXT_FIELD_BYTES: usize = 64 * 1024;

/// Builds a form from its multipart fields (the token has been checked).
pub trait FromMultipart: Sized {
    fn from_multipart(fields: MultipartFields) -> Result<Self, AppError>;
}

/// A multipart form whose `csrf_token` was checked before the handler runs. The route's body
/// limit bounds what is read.
#[derive(Debug)]
pub struct CsrfMultipart<T>(pub T);

impl<S, T> FromRequest<S> for CsrfMultipart<T>
where
    T: FromMultipart,
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let is_multipart = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("multipart/form-data"));
        if !is_multipart {
            // No form of ours: it carries no token.
            verify(&mut parts, state, "").await?;
            return Err(AppError::UnsupportedMediaType);
        }
        let mut multipart = Multipart::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|rejection| AppError::rejected(rejection.status(), rejection.body_text()))?;
        let fields = read_multipart(&mut multipart).await?;
        verify(&mut parts, state, fields.get(FIELD).unwrap_or("")).await?;
        T::from_multipart(fields).map(CsrfMultipart)
    }
}

async fn read_multipart(multipart: &mut Multipart) -> Result<MultipartFields, AppError> {
    let bad = |err: axum::extract::multipart::MultipartError| {
        if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge("the upload is too large".into())
        } else {
            AppError::BadRequest("the form could not be read; reload the page and try again".into())
        }
    };
    let mut fields = MultipartFields::default();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        if fields.text.len() + fields.files.len() >= MAX_FIELDS {
            return Err(AppError::BadRequest("the form has too many fields".into()));
        }
        let name = field.name().unwrap_or("").to_string();
        match field.file_name().map(str::to_string) {
            Some(file_name) => {
                let bytes = field.bytes().await.map_err(bad)?;
                fields.files.push(UploadedFile { field: name, file_name: Some(file_name), bytes });
            }
            None => {
                let bytes = field.bytes().await.map_err(bad)?;
                if bytes.len() > MAX_TEXT_FIELD_BYTES {
                    return Err(AppError::TooLarge(format!("the field {name:?} is too long")));
                }
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| AppError::BadRequest(format!("{name}: text must be valid UTF-8")))?;
                check_text(&text)?;
                check_text(&name)?;
                fields.text.push((name, text));
            }
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(cookie: Option<&str>) -> CsrfContext {
        CsrfContext::new(CsrfKey::new([7; 32]), cookie)
    }

    #[test]
    fn tokens_verify_for_the_same_nonce_and_user_only() {
        let nonce = b64().encode([1u8; 32]);
        let user = Uuid::new_v4();
        let issuing = context(Some(&nonce));
        let token = issuing.token_for(Some(user));
        let later = context(Some(&nonce));
        assert!(later.verify(Some(user), &token).is_ok());
        assert!(later.verify(None, &token).is_err(), "a user's token is not a visitor's");
        assert!(later.verify(Some(Uuid::new_v4()), &token).is_err(), "nor another user's");
        let visitor = later.token_for(None);
        assert!(later.verify(Some(user), &visitor).is_err(), "a visitor's token is worthless after log-in");
        let other_browser = context(Some(&b64().encode([2u8; 32])));
        assert!(other_browser.verify(Some(user), &token).is_err());
        let other_key = CsrfContext::new(CsrfKey::new([8; 32]), Some(&nonce));
        assert!(other_key.verify(Some(user), &token).is_err());
        assert!(later.verify(Some(user), "").is_err());
        assert!(later.verify(Some(user), "not base64 at all!").is_err());
    }

    #[test]
    fn a_browser_without_a_nonce_cannot_submit() {
        let fresh = context(None);
        assert!(fresh.fresh);
        let token = fresh.token_for(None);
        assert!(fresh.verify(None, &token).is_err());
        assert!(context(Some("short")).fresh, "malformed nonces are replaced");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; faceoff_csrf=xyz ; b=2"));
        assert_eq!(cookie_value(&headers, COOKIE), Some("xyz"));
        assert_eq!(cookie_value(&headers, "c"), None);
    }
}
