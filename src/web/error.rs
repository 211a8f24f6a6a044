//! The one error type at the HTTP edge. Handlers return [`AppError`] and use `?` on the domain
//! errors, which convert here (`From`): this file alone decides each error's status, code and
//! message. The `render_errors` middleware turns an `AppError` (and any bare 4xx/5xx from the
//! framework: unknown routes, wrong methods, oversized or malformed bodies, timeouts) into an
//! HTML page in the site layout, or into `{"error": {"code", "message"}}` under `/api/` and
//! `/webhooks/`. A 500 logs its cause and shows none of it.

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use serde_json::json;

use std::sync::Arc;

use sqlx::PgPool;

use crate::{
    accounts::{CreateUserError, admin::AdjustError, rate_limit::RateLimited},
    config::Config,
    ledger::LedgerError,
    payments::webhook::WebhookError,
    runs::{CreateError, create::FieldErrors},
    web::{
        assets::Assets,
        auth::{Viewer, ViewerSlot},
        csrf::CsrfContext,
        layout::Layout,
        render,
    },
};

pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// The body of every JSON API error (the OpenAPI document's `Error` schema).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Error, example = json!({"error": {"code": "invalid_input", "message": "prompt: write a prompt"}}))]
pub struct ApiError {
    pub error: ApiErrorDetail,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct ApiErrorDetail {
    pub code: ErrorCode,
    /// What was wrong, in words for a person (the fields it names, what to do).
    pub message: String,
}

/// The stable machine-readable codes of API errors (`error.code`): clients may branch on them;
/// the messages may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    InsufficientCredits,
    NotFound,
    MethodNotAllowed,
    Timeout,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidInput,
    RateLimited,
    Internal,
    Unavailable,
}

impl ErrorCode {
    /// Every code with its status and meaning, for the reference page.
    pub const ALL: &[(ErrorCode, u16, &str)] = &[
        (
            ErrorCode::BadRequest,
            400,
            "Malformed JSON, text with NUL characters or invalid UTF-8, a bad Idempotency-Key or cursor, a malformed query.",
        ),
        (ErrorCode::Unauthorized, 401, "No API key, or a revoked or unknown one."),
        (ErrorCode::Forbidden, 403, "The key may not do this."),
        (
            ErrorCode::InsufficientCredits,
            402,
            "Not enough credits: the message says how many are needed and how many you have.",
        ),
        (ErrorCode::NotFound, 404, "No such thing, also for other users' runs and webhooks."),
        (ErrorCode::MethodNotAllowed, 405, "That method is not available at this address."),
        (ErrorCode::Timeout, 408, "The request took too long."),
        (ErrorCode::Conflict, 409, "An Idempotency-Key already used for a different request."),
        (ErrorCode::PayloadTooLarge, 413, "The body is too large (runs: 15 MB, everything else: 64 KB)."),
        (ErrorCode::UnsupportedMediaType, 415, "The body is not sent as application/json."),
        (ErrorCode::InvalidInput, 422, "Missing or wrong fields; the message names them."),
        (ErrorCode::RateLimited, 429, "Too many requests with this key: wait Retry-After seconds."),
        (ErrorCode::Internal, 500, "A bug on our side."),
        (ErrorCode::Unavailable, 503, "The service is briefly unavailable: retry shortly."),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("you need to log in to see this page")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("this form has expired or did not come from this site; reload the page and try again")]
    CsrfFailed,
    #[error("insufficient credits (need {need}, have {have})")]
    InsufficientCredits { need: i64, have: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("the request was not sent as a form")]
    UnsupportedMediaType,
    #[error("too many attempts; try again in {retry_after} seconds")]
    RateLimited { retry_after: u64 },
    #[error("the service is temporarily unavailable; try again shortly")]
    Unavailable(#[source] anyhow::Error),
    #[error("something went wrong on our side")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn not_found() -> Self {
        AppError::NotFound("we could not find that page".into())
    }

    /// The id in a path (`/runs/{id}`): anything that is not an id names nothing, so it is a 404
    /// ("we could not find that `what`"), like an id that does not exist or is someone else's.
    pub fn parse_id(raw: &str, what: &str) -> Result<uuid::Uuid, AppError> {
        raw.trim().parse().map_err(|_| AppError::NotFound(format!("we could not find that {what}")))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::CsrfFailed => StatusCode::FORBIDDEN,
            AppError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code (the JSON API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            AppError::NotFound(_) => "not_found",
            AppError::BadRequest(_) => "bad_request",
            AppError::Unprocessable(_) => "invalid_input",
            AppError::Unauthorized => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::CsrfFailed => "csrf_failed",
            AppError::InsufficientCredits { .. } => "insufficient_credits",
            AppError::Conflict(_) => "conflict",
            AppError::TooLarge(_) => "payload_too_large",
            AppError::UnsupportedMediaType => "unsupported_media_type",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal",
        }
    }
}

impl AppError {
    /// An extractor's rejection (its status and plain-text explanation) as an `AppError`.
    pub fn rejected(status: StatusCode, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => AppError::TooLarge("the request was too large".into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType,
            s if s.is_client_error() => {
                let text = text.trim();
                if text.is_empty() || text.len() > 300 {
                    AppError::BadRequest("the request could not be understood".into())
                } else {
                    AppError::BadRequest(text.to_string())
                }
            }
            _ => AppError::Internal(anyhow::anyhow!("rejection {status}: {text}")),
        }
    }
}

impl From<tower_sessions::session::Error> for AppError {
    fn from(err: tower_sessions::session::Error) -> Self {
        AppError::Internal(anyhow::anyhow!("session: {err}"))
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(err: tokio::task::JoinError) -> Self {
        AppError::Internal(anyhow::anyhow!("background task: {err}"))
    }
}

impl From<RateLimited> for AppError {
    fn from(limited: RateLimited) -> Self {
        AppError::RateLimited { retry_after: limited.retry_after }
    }
}

impl From<LedgerError> for AppError {
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::InsufficientCredits { need, have } => AppError::InsufficientCredits { need, have },
            LedgerError::Db(err) => err.into(),
            other => AppError::Internal(other.into()),
        }
    }
}

impl From<AdjustError> for AppError {
    fn from(err: AdjustError) -> Self {
        match err {
            AdjustError::InvalidAmount | AdjustError::InvalidReason | AdjustError::InvalidKey => {
                AppError::Unprocessable(err.to_string())
            }
            AdjustError::UnknownUser(_) => AppError::NotFound(err.to_string()),
            AdjustError::Insufficient { need, have } => AppError::InsufficientCredits { need, have },
            AdjustError::KeyConflict => AppError::Conflict(err.to_string()),
            AdjustError::Ledger(err) => err.into(),
            AdjustError::Db(err) => err.into(),
        }
    }
}

impl From<WebhookError> for AppError {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::Signature(_) | WebhookError::Payload(_) => AppError::BadRequest(err.to_string()),
            WebhookError::Ledger(err) => err.into(),
            WebhookError::Db(err) => err.into(),
        }
    }
}

impl From<crate::webhooks::InputErrors> for AppError {
    fn from(errors: crate::webhooks::InputErrors) -> Self {
        AppError::Unprocessable(errors.summary())
    }
}

impl From<FieldErrors> for AppError {
    fn from(errors: FieldErrors) -> Self {
        AppError::Unprocessable(errors.summary())
    }
}

impl From<CreateError> for AppError {
    fn from(err: CreateError) -> Self {
        match err {
            CreateError::Invalid(errors) => errors.into(),
            CreateError::KeyConflict { .. } => AppError::Conflict(err.to_string()),
            CreateError::InsufficientCredits { need, have } => AppError::InsufficientCredits { need, have },
            CreateError::Db(err) => err.into(),
            CreateError::Other(err) => AppError::Internal(err),
        }
    }
}

impl From<CreateUserError> for AppError {
    fn from(err: CreateUserError) -> Self {
        match err {
            CreateUserError::EmailTaken => AppError::Conflict(err.to_string()),
            CreateUserError::Ledger(err) => err.into(),
            CreateUserError::Db(err) => err.into(),
        }
    }
}

impl From<crate::accounts::lifecycle::LifecycleError> for AppError {
    fn from(err: crate::accounts::lifecycle::LifecycleError) -> Self {
        use crate::accounts::lifecycle::LifecycleError;
        match err {
            LifecycleError::Ledger(err) => err.into(),
            LifecycleError::Db(err) => err.into(),
            LifecycleError::Mail(err) => AppError::Internal(err.into()),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                AppError::Unavailable(err.into())
            }
            other => AppError::Internal(other.into()),
        }
    }
}

/// What the error middleware needs to render the page, carried as a response extension.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            AppError::Internal(err) => tracing::error!(error = ?err, "internal error"),
            AppError::Unavailable(err) => tracing::warn!(error = %err, "service unavailable"),
            _ => {}
        }
        let retry_after = match &self {
            AppError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        };
        let info = ErrorInfo { status, code: self.code(), message: self.to_string(), retry_after };
        let mut response = status.into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(info);
        response
    }
}

/// What the error middleware needs to render a page.
#[derive(Clone)]
pub struct ErrorPages {
    pub pool: PgPool,
    pub assets: Arc<Assets>,
    pub config: Arc<Config>,
}

/// Whether errors of `path` are JSON (the API and webhooks) rather than pages.
pub fn is_json_path(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/webhooks/")
}

/// Middleware: gives every error response its final form (see the module docs).
pub async fn render_errors(State(pages): State<ErrorPages>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| path.clone());
    let is_json = is_json_path(&path);
    // The handler's user, if it loaded one, is reused for the error page.
    let slot = ViewerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let session = req.extensions().get::<tower_sessions::Session>().cloned();
    let csrf = req.extensions().get::<CsrfContext>().cloned();
    let response = next.run(req).await;

    let status = response.status();
    let info = response.extensions().get::<ErrorInfo>().cloned();
    if info.is_none() && (status.as_u16() < 400 || is_rendered(&response)) {
        let signed_in = slot.get().is_some_and(|viewer| viewer.0.is_some());
        return if signed_in { private(response) } else { response };
    }
    let info = match info {
        Some(info) => info,
        None => framework_error(response).await,
    };

    if is_json {
        let mut out =
            (info.status, Json(json!({"error": {"code": info.code, "message": info.message}}))).into_response();
        if let Some(secs) = info.retry_after {
            out.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return out;
    }
    if info.status == StatusCode::UNAUTHORIZED {
        let next = url::form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect::<String>();
        return Redirect::to(&format!("/login?next={next}")).into_response();
    }
    let viewer = match slot.get() {
        Some(viewer) => viewer.clone(),
        // A broken database still gets a page (without the user).
        None => Viewer::load(&pages.pool, session.as_ref()).await.unwrap_or(Viewer(None)),
    };
    let signed_in = viewer.0.is_some();
    let layout = Layout::new(viewer, csrf, pages.assets.clone(), &pages.config, &path);
    let page = ErrorPage { layout, status: info.status.as_u16(), title: title_for(info.status), message: info.message };
    let mut out = (info.status, render(&page)).into_response();
    if let Some(secs) = info.retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if signed_in { private(out) } else { out }
}

/// A page rendered for a signed-in user (their balance is in its header, their data in its
/// body) is stored by no browser cache or proxy: `Cache-Control: private, no-store`, unless the
/// handler chose otherwise (images, downloads).
fn private(mut response: Response) -> Response {
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html") || ct.starts_with("application/json"));
    if is_page && !response.headers().contains_key(header::CACHE_CONTROL) {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    }
    response
}

fn is_rendered(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        ct.starts_with("text/html") || ct.starts_with("application/json") || ct.starts_with("text/event-stream")
    })
}

/// Turns a bare framework response (a rejection's plain-text body, or an empty 404/405/413/408)
/// into an [`ErrorInfo`], keeping the framework's explanation for 4xx.
async fn framework_error(response: Response) -> ErrorInfo {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).trim().to_string();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "we could not find that page".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "that action is not available at this address".to_string())
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request was too large".to_string()),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long; try again".to_string()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "the request was not sent as a form or JSON".to_string())
        }
        s if s.is_client_error() => {
            let message = if detail.is_empty() || detail.len() > 300 {
                "the request could not be understood".to_string()
            } else {
                detail.clone()
            };
            ("bad_request", message)
        }
        _ => ("internal", "something went wrong on our side".to_string()),
    };
    if status.is_server_error() {
        tracing::error!(%status, body = %detail, "server error without an AppError");
    }
    ErrorInfo { status, code, message, retry_after: None }
}

fn title_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "That did not work",
        401 => "Please log in",
        402 => "Not enough credits",
        403 => "Not allowed",
        404 => "Page not found",
        405 => "Not allowed here",
        408 => "That took too long",
        409 => "Already done",
        413 => "Too large",
        429 => "Slow down",
        503 => "Temporarily unavailable",
        _ => "Something went wrong",
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub status: u16,
    pub title: &'static str,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_error_code_is_documented() {
        let documented: Vec<&str> = ErrorCode::ALL.iter().map(|(code, _, _)| code.as_str()).collect();
        let errors = [
            AppError::not_found(),
            AppError::BadRequest(String::new()),
            AppError::Unprocessable(String::new()),
            AppError::Unauthorized,
            AppError::Forbidden(String::new()),
            AppError::InsufficientCredits { need: 1, have: 0 },
            AppError::Conflict(String::new()),
            AppError::TooLarge(String::new()),
            AppError::UnsupportedMediaType,
            AppError::RateLimited { retry_after: 1 },
            AppError::Unavailable(anyhow::anyhow!("x")),
            AppError::Internal(anyhow::anyhow!("x")),
        ];
        for err in errors {
            assert!(documented.contains(&err.code()), "{} is not in ErrorCode::ALL", err.code());
            let (_, status, _) = ErrorCode::ALL.iter().find(|(c, _, _)| c.as_str() == err.code()).expect("listed");
            assert_eq!(*status, err.status().as_u16(), "{}", err.code());
        }
        for (code, _, _) in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).expect("json"), code.as_str());
        }
    }
}
