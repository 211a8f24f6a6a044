//! The JSON API's rate limits at the edge (`accounts::rate_limit::ApiLimits` counts): every
//! response under `/api/` carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds until the full limit is back), and a refused request is a `429`
//! with `Retry-After`. Requests with an API key count against that key ([`crate::web::ApiUser`]
//! counts them once the key is known); requests without a valid key count against the client's
//! address. The limits are global across instances (counted in the shared store, see
//! `ApiLimits` and `accounts::rate_limit::store`).

use std::sync::{Arc, OnceLock};

use axum::{
    Json,
    extract::{ConnectInfo, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    accounts::rate_limit::{ApiLimits, ApiQuota},
    config::Config,
    web::{
        client_ip,
        error::{ApiError, ApiErrorDetail, ErrorCode},
    },
};

pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Where the request's quota is recorded once it is counted (by the key, or by the address).
#[derive(Clone, Default)]
pub struct QuotaSlot(Arc<OnceLock<ApiQuota>>);

impl QuotaSlot {
    pub fn set(&self, quota: ApiQuota) {
        let _ = self.0.set(quota);
    }

    pub fn is_set(&self) -> bool {
        self.0.get().is_some()
    }
}

/// What the middleware needs.
#[derive(Clone)]
pub struct ApiLimitLayer {
    pub limits: Arc<ApiLimits>,
    pub config: Arc<Config>,
}

fn client_address(request: &Request, config: &Config) -> Option<std::net::IpAddr> {
    let proxied = config.client_ip_header.as_ref().and_then(|name| client_ip::from_header(request.headers(), name));
    proxied.or_else(|| request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|ConnectInfo(a)| a.ip()))
}

/// Middleware (outside the error renderer, so that its headers reach every final response).
pub async fn middleware(State(layer): State<ApiLimitLayer>, mut request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let slot = QuotaSlot::default();
    request.extensions_mut().insert(slot.clone());
    let address = client_address(&request, &layer.config);
    // Without any credential the address is counted before the handler runs.
    if !request.headers().contains_key(header::AUTHORIZATION)
        && let Some(address) = address
        && let Some(quota) = layer.limits.check_address(address).await
    {
        slot.set(quota);
        if quota.retry_after.is_some() {
            return with_headers(too_many(quota), quota);
        }
    }
    let response = next.run(request).await;
    // A route that asked for no key (the OpenAPI document, an unknown path) counts by address.
    if !slot.is_set()
        && let Some(address) = address
        && let Some(quota) = layer.limits.check_address(address).await
    {
        slot.set(quota);
    }
    match slot.0.get() {
        Some(quota) => with_headers(response, *quota),
        None => response,
    }
}

/// The `429` for a request over its limit.
pub fn too_many(quota: ApiQuota) -> Response {
    let retry_after = quota.retry_after.unwrap_or(1);
    let body = ApiError {
        error: ApiErrorDetail {
            code: ErrorCode::RateLimited,
            message: format!("too many requests; try again in {retry_after} seconds"),
        },
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

fn with_headers(mut response: Response, quota: ApiQuota) -> Response {
    let headers = response.headers_mut();
    headers.insert(LIMIT, HeaderValue::from(quota.limit));
    headers.insert(REMAINING, HeaderValue::from(quota.remaining));
    headers.insert(RESET, HeaderValue::from(quota.reset));
    if let Some(retry_after) = quota.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    response
}
