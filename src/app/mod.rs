//! The application, assembled above every domain: the route table ([`routes`]: each domain's
//! route files plus the pages that belong to none, the home page and the health endpoints) and
//! the middleware stack around it ([`app`]). Tests and `serve` build the very same `Router`.
//!
//! Layering (imports only go down; `tests/api/architecture.rs` checks the rule for the cores):
//!
//! ```text
//! app, server, cli                  router + middleware, processes, command line
//! <domain>/{routes,pages,api}.rs    each domain's HTTP handlers
//! state, web                        AppState; the edge toolkit (errors, extractors, layout, CSRF)
//! <domain> cores                    accounts ledger catalog runs jobs providers payments storage
//! config, db, telemetry             infrastructure
//! ```

use std::time::Duration;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::{
        CompressionLayer, CompressionLevel,
        predicate::{DefaultPredicate, NotForContentType, Predicate},
    },
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tower_sessions::{Expiry, SessionManagerLayer, cookie::SameSite};

use crate::{
    accounts::session_store::PgSessionStore,
    state::AppState,
    telemetry,
    web::{
        AppError, Routes,
        csrf::{self, CsrfSettings},
        error::{self, ErrorPages},
        input,
        rate_limit::{self, ApiLimitLayer},
    },
};

pub mod docs;
mod health;
mod home;

pub use health::metrics_router;

/// The largest request body accepted anywhere (the studio's reference-image upload is the
/// biggest legitimate one). Routes accept 64 KiB unless they raise [`DefaultBodyLimit`].
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_BODY_BYTES: usize = 64 * 1024;
/// How long a request may take to produce its response headers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions end after this long without a request.
pub const SESSION_IDLE: time::Duration = time::Duration::days(14);

const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; \
    font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; \
    form-action 'self' https://checkout.stripe.com; frame-ancestors 'none'";

/// Every route of the application (without the static assets), with its paths.
pub fn routes() -> Routes<AppState> {
    Routes::new()
        .merge(home::routes())
        .merge(health::routes())
        .merge(crate::accounts::routes::routes())
        .merge(crate::catalog::pages::routes())
        .merge(crate::runs::pages::routes())
        .merge(crate::arena::pages::routes())
        .merge(crate::arena::api::routes())
        .merge(crate::runs::api::routes())
        .merge(crate::payments::api::routes())
        .merge(crate::webhooks::api::routes())
        .merge(crate::webhooks::pages::routes())
        .merge(docs::routes())
        .merge(crate::payments::routes::routes())
        .merge(crate::storage::routes::routes())
        .merge(crate::sharing::pages::routes())
}

/// The whole application as a `Router`, without a socket (tests and `serve` share it).
pub fn app(state: AppState) -> Router {
    let sessions = SessionManagerLayer::new(PgSessionStore::new(state.pool.clone()))
        .with_name("faceoff_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.config.secure_cookies)
        .with_expiry(Expiry::OnInactivity(SESSION_IDLE));
    let csrf_settings = CsrfSettings { key: state.csrf_key.clone(), secure: state.config.secure_cookies };
    let error_pages =
        ErrorPages { pool: state.pool.clone(), assets: state.assets.clone(), config: state.config.clone() };
    let api_limits = ApiLimitLayer { limits: state.api_limits.clone(), config: state.config.clone() };

    let x_request_id = HeaderName::from_static("x-request-id");
    routes()
        .into_router()
        .merge(state.assets.router())
        .fallback(|| async { AppError::not_found() })
        // Innermost first: these see each route's response before the error renderer does.
        .layer(CatchPanicLayer::custom(|_| AppError::Internal(anyhow::anyhow!("handler panicked")).into_response()))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(middleware::from_fn(input::reject_unstorable_uri))
        .layer(middleware::from_fn_with_state(error_pages, error::render_errors))
        .layer(middleware::from_fn_with_state(api_limits, rate_limit::middleware))
        .layer(middleware::from_fn(telemetry::track_requests))
        .layer(middleware::from_fn_with_state(csrf_settings, csrf::middleware))
        .layer(sessions)
        .layer(middleware::from_fn(run_to_completion))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(x_request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
                    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
                }))
                .layer(PropagateRequestIdLayer::new(x_request_id))
                // Pages are compressed per request: the fastest level keeps most of the gain (the
                // comparison page: 15.1 KB, 4.0 KB at the default brotli level) at a fraction of
                // the CPU (see bench/RESULTS.md, figure 1 with Accept-Encoding: br).
                // ZIP downloads are left alone: their entries are compressed images already.
                .layer(
                    CompressionLayer::new()
                        .quality(CompressionLevel::Fastest)
                        .compress_when(DefaultPredicate::new().and(NotForContentType::const_new("application/zip"))),
                )
                .layer(security_header(header::CONTENT_SECURITY_POLICY, CSP))
                .layer(security_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .layer(security_header(header::REFERRER_POLICY, "strict-origin-when-cross-origin"))
                .layer(security_header(header::X_FRAME_OPTIONS, "DENY"))
                .layer(security_header(
                    HeaderName::from_static("permissions-policy"),
                    "camera=(), microphone=(), geolocation=()",
                )),
        )
        .with_state(state)
}

/// Runs everything below it (session load and save, the handler, its queries) in a task of its
/// own, so a client that disconnects mid-request does not cancel that work half-way. Dropping a
/// sqlx 0.9 query or transaction future mid-flight can leave its connection out of step with the
/// server: we measured connections that never came back to the pool after a load generator
/// hung up on in-flight run submissions (see `db::begin` for the transaction case). A handler
/// that panics is answered by `CatchPanicLayer` inside the task; a crashed task is a 500.
async fn run_to_completion(request: axum::extract::Request, next: middleware::Next) -> Response {
    use tracing::Instrument;
    match tokio::spawn(next.run(request).in_current_span()).await {
        Ok(response) => response,
        Err(err) => AppError::Internal(anyhow::anyhow!("request task failed: {err}")).into_response(),
    }
}

fn security_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}
