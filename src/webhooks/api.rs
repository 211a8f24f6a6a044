//! `/api/v1/webhooks…`: an API user's webhook endpoints (register, change, delete, rotate the
//! secret), their deliveries with every attempt's answer, and replays. The same as the account
//! page `/account/webhooks` (`pages.rs`).

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{
    AttemptRow, DEFAULT_OVERLAP, DEFAULT_THRESHOLD, DeliveryRow, DeliveryStatus, Endpoint, EndpointInput, EventType,
    InputErrors, MAX_ENDPOINTS, MAX_OVERLAP, rfc3339,
};
use crate::{
    state::AppState,
    web::{
        ApiJson, ApiUser, AppError, Result, Routes,
        error::ApiError,
        pagination::{PageQuery, split_page},
    },
};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .api(routes!(list_endpoints, create_endpoint))
        .api(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .api(routes!(rotate_secret))
        .api(routes!(list_deliveries))
        .api(routes!(get_delivery))
        .api(routes!(replay_delivery))
}

/// A webhook endpoint (its secret is shown only when it is created or rotated).
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub struct EndpointView {
    id: Uuid,
    #[schema(example = "https://example.com/hooks/faceoff")]
    url: String,
    #[schema(example = "production")]
    description: String,
    events: Vec<EventType>,
    /// `credits.low` is sent when a run takes your available credits below this.
    #[schema(example = 50)]
    credits_low_threshold: i64,
    /// The first characters of the current secret.
    #[schema(example = "whsec_Zp3k1…")]
    secret_hint: String,
    /// Until when the previous secret (after a rotation) still signs deliveries.
    #[schema(format = DateTime)]
    previous_secret_expires_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&Endpoint> for EndpointView {
    fn from(endpoint: &Endpoint) -> Self {
        EndpointView {
            id: endpoint.endpoint_id,
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            events: endpoint.event_types(),
            credits_low_threshold: endpoint.credits_low_threshold,
            secret_hint: endpoint.secret_hint(),
            previous_secret_expires_at: endpoint
                .previous_secret_expires_at
                .filter(|until| *until > OffsetDateTime::now_utc())
                .map(rfc3339),
            created_at: rfc3339(endpoint.created_at),
        }
    }
}

/// An endpoint with its signing secret, shown this once.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpointWithSecret)]
struct EndpointWithSecret {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// Verify each delivery's `Faceoff-Signature` with it. Shown only now: keep it.
    #[schema(example = "whsec_Zp3k1oV0mB2cN4dF6gH8jK0lM2nP4qR6sT8uV0wX2yZ")]
    secret: String,
}

/// Your webhook endpoints.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpointList)]
struct EndpointList {
    data: Vec<EndpointView>,
}

/// Your webhook endpoints (at most 10).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", responses((status = 200, body = EndpointList)))]
async fn list_endpoints(State(state): State<AppState>, user: ApiUser) -> Result<Json<EndpointList>> {
    let endpoints = super::list(&state.pool, user.user_id).await?;
    Ok(Json(EndpointList { data: endpoints.iter().map(EndpointView::from).collect() }))
}

/// A webhook endpoint to register.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewWebhookEndpoint, example = json!({"url": "https://example.com/hooks/faceoff", "events": ["run.completed", "job.failed"]}))]
struct CreateBody {
    /// `https://` only; its host must resolve to public addresses.
    #[schema(example = "https://example.com/hooks/faceoff")]
    url: String,
    /// At least one of `run.completed`, `job.failed`, `credits.low`.
    #[schema(example = json!(["run.completed", "job.failed"]))]
    events: Vec<String>,
    /// At most 200 characters.
    #[serde(default)]
    description: Option<String>,
    /// For `credits.low` (default 50).
    #[serde(default)]
    #[schema(minimum = 1, example = 50)]
    credits_low_threshold: Option<i64>,
}

async fn checked(state: &AppState, input: &EndpointInput, errors: InputErrors) -> Result<String> {
    let mut errors = errors;
    let url = super::validate(input, state.config.webhooks.allow_private, &mut errors).await;
    match url {
        Some(url) if errors.0.is_empty() => Ok(url),
        _ => Err(errors.into()),
    }
}

/// Registers an endpoint. The answer holds its signing secret, shown this once.
#[utoipa::path(
    post, path = "/api/v1/webhooks", tag = "webhooks",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Registered; keep the secret.", body = EndpointWithSecret),
        (status = 409, description = "You already have 10 endpoints.", body = ApiError),
        (status = 422, description = "Invalid fields: a URL that is not https, resolves to a private address or cannot be resolved; unknown events.", body = ApiError),
    )
)]
async fn create_endpoint(
    State(state): State<AppState>,
    user: ApiUser,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response> {
    let mut errors = InputErrors::default();
    let events = super::parse_events(&body.events, &mut errors);
    let input = EndpointInput {
        url: body.url,
        description: body.description.unwrap_or_default(),
        events,
        credits_low_threshold: body.credits_low_threshold.unwrap_or(DEFAULT_THRESHOLD),
    };
    let url = checked(&state, &input, errors).await?;
    if super::count(&state.pool, user.user_id).await? >= MAX_ENDPOINTS {
        return Err(AppError::Conflict(format!("you have {MAX_ENDPOINTS} webhook endpoints; delete one first")));
    }
    let endpoint = super::create(&state.pool, user.user_id, &url, &input).await?;
    let body = EndpointWithSecret { endpoint: EndpointView::from(&endpoint), secret: endpoint.secret.clone() };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn owned(state: &AppState, user: &ApiUser, id: &str) -> Result<Endpoint> {
    let id = AppError::parse_id(id, "webhook endpoint")?;
    super::find(&state.pool, user.user_id, id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that webhook endpoint".into()))
}

/// A webhook endpoint.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses((status = 200, body = EndpointView), (status = 404, description = "No such endpoint.", body = ApiError))
)]
async fn get_endpoint(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>> {
    Ok(Json(EndpointView::from(&owned(&state, &user, &id).await?)))
}

/// Changes to an endpoint: only the fields given change.
#[derive(Deserialize, ToSchema)]
#[schema(as = WebhookEndpointChange, example = json!({"events": ["run.completed", "credits.low"], "credits_low_threshold": 100}))]
struct UpdateBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1)]
    credits_low_threshold: Option<i64>,
}

/// Changes an endpoint's URL, events, description or threshold (its secret stays).
#[utoipa::path(
    patch, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    request_body = UpdateBody,
    responses(
        (status = 200, body = EndpointView),
        (status = 404, description = "No such endpoint.", body = ApiError),
        (status = 422, description = "Invalid fields.", body = ApiError),
    )
)]
async fn update_endpoint(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<EndpointView>> {
    let endpoint = owned(&state, &user, &id).await?;
    let mut errors = InputErrors::default();
    let events = match &body.events {
        Some(events) => super::parse_events(events, &mut errors),
        None => endpoint.event_types(),
    };
    let input = EndpointInput {
        url: body.url.unwrap_or_else(|| endpoint.url.clone()),
        description: body.description.unwrap_or_else(|| endpoint.description.clone()),
        events,
        credits_low_threshold: body.credits_low_threshold.unwrap_or(endpoint.credits_low_threshold),
    };
    let url = checked(&state, &input, errors).await?;
    let updated = super::update(&state.pool, user.user_id, endpoint.endpoint_id, &url, &input)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that webhook endpoint".into()))?;
    Ok(Json(EndpointView::from(&updated)))
}

/// Deletes an endpoint and its deliveries.
#[utoipa::path(
    delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses((status = 204, description = "Deleted."), (status = 404, description = "No such endpoint.", body = ApiError))
)]
async fn delete_endpoint(State(state): State<AppState>, user: ApiUser, Path(id): Path<String>) -> Result<StatusCode> {
    let endpoint = owned(&state, &user, &id).await?;
    super::delete(&state.pool, user.user_id, endpoint.endpoint_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How a rotation goes.
#[derive(Deserialize, ToSchema)]
#[schema(as = SecretRotation, example = json!({"overlap_seconds": 86400}))]
struct RotateBody {
    /// How long the current secret keeps signing next to the new one (a second `v1=`), so your
    /// receiver can switch without missing a delivery: 0–604800 seconds, a day by default. 0
    /// stops it at once (a leaked secret).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604800, example = 86400)]
    overlap_seconds: Option<i64>,
}

/// Rotates the signing secret. The answer holds the new secret, shown this once; the old one
/// keeps signing too until `previous_secret_expires_at`.
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    request_body = RotateBody,
    responses(
        (status = 200, body = EndpointWithSecret),
        (status = 404, description = "No such endpoint.", body = ApiError),
        (status = 422, description = "`overlap_seconds` outside 0–604800.", body = ApiError),
    )
)]
async fn rotate_secret(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RotateBody>,
) -> Result<Json<EndpointWithSecret>> {
    let endpoint = owned(&state, &user, &id).await?;
    let overlap = match body.overlap_seconds {
        None => DEFAULT_OVERLAP,
        Some(secs) if (0..=MAX_OVERLAP.whole_seconds()).contains(&secs) => time::Duration::seconds(secs),
        Some(_) => return Err(AppError::Unprocessable("overlap_seconds: between 0 and 604800".into())),
    };
    let rotated = super::rotate_secret(&state.pool, user.user_id, endpoint.endpoint_id, overlap)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that webhook endpoint".into()))?;
    Ok(Json(EndpointWithSecret { endpoint: EndpointView::from(&rotated), secret: rotated.secret.clone() }))
}

/// One delivery of an event to an endpoint.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
struct DeliveryView {
    id: Uuid,
    /// The event's id (the body's `id`): the same for every delivery and replay of it.
    event_id: Uuid,
    event_type: String,
    status: DeliveryStatus,
    /// Attempts so far.
    attempts: i32,
    /// While pending: when the next attempt is due.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    /// The status code of the last answer (none: no answer, see `last_error`).
    last_status_code: Option<i32>,
    last_error: Option<String>,
    #[schema(format = DateTime)]
    last_attempt_at: Option<String>,
    /// The delivery this one replays.
    replay_of: Option<Uuid>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    completed_at: Option<String>,
}

impl From<&DeliveryRow> for DeliveryView {
    fn from(row: &DeliveryRow) -> Self {
        DeliveryView {
            id: row.delivery_id,
            event_id: row.event_id,
            event_type: row.event_type.clone(),
            status: row.status,
            attempts: row.attempts,
            next_attempt_at: (row.status == DeliveryStatus::Pending).then(|| rfc3339(row.next_attempt_at)),
            last_status_code: row.last_status_code,
            last_error: row.last_error.clone(),
            last_attempt_at: row.last_attempt_at.map(rfc3339),
            replay_of: row.replay_of,
            created_at: rfc3339(row.created_at),
            completed_at: row.completed_at.map(rfc3339),
        }
    }
}

/// A page of deliveries.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDeliveryList)]
struct DeliveryList {
    /// Newest first.
    data: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// An endpoint's deliveries, newest first, a page at a time.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id."), PageQuery),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, description = "A cursor this list did not give out, or a malformed query.", body = ApiError),
        (status = 404, description = "No such endpoint.", body = ApiError),
        (status = 422, description = "`limit` outside 1–100.", body = ApiError),
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<DeliveryList>> {
    let endpoint = owned(&state, &user, &id).await?;
    let limit = query.limit()?;
    let after = query.position(|text| {
        let (nanos, id) = text.split_once('/')?;
        let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
        Some((at, id.parse::<Uuid>().ok()?))
    })?;
    let rows = super::deliveries(&state.pool, endpoint.endpoint_id, after, limit + 1).await?;
    let (rows, next_cursor) =
        split_page(rows, limit, |row| format!("{}/{}", row.created_at.unix_timestamp_nanos(), row.delivery_id));
    Ok(Json(DeliveryList { data: rows.iter().map(DeliveryView::from).collect(), next_cursor }))
}

/// One attempt of a delivery and the endpoint's answer.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookAttempt)]
struct AttemptView {
    attempt: i32,
    #[schema(format = DateTime)]
    started_at: String,
    duration_ms: i32,
    /// The answer's status code (none when there was no answer).
    status_code: Option<i32>,
    /// Why the attempt failed: a timeout, a refused address, a non-2xx answer.
    error: Option<String>,
    /// The first kilobyte of the answer.
    response_excerpt: Option<String>,
}

impl From<&AttemptRow> for AttemptView {
    fn from(row: &AttemptRow) -> Self {
        AttemptView {
            attempt: row.attempt,
            started_at: rfc3339(row.started_at),
            duration_ms: row.duration_ms,
            status_code: row.status_code,
            error: row.error.clone(),
            response_excerpt: row.response_excerpt.clone(),
        }
    }
}

/// A delivery with every attempt.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDeliveryWithAttempts)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    attempt_log: Vec<AttemptView>,
}

async fn owned_delivery(state: &AppState, user: &ApiUser, id: &str, delivery_id: &str) -> Result<DeliveryRow> {
    let endpoint_id = AppError::parse_id(id, "delivery")?;
    let delivery_id = AppError::parse_id(delivery_id, "delivery")?;
    super::find_delivery(&state.pool, user.user_id, endpoint_id, delivery_id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that delivery".into()))
}

/// A delivery and each attempt's answer.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id."), ("delivery_id" = Uuid, Path, description = "The delivery's id.")),
    responses((status = 200, body = DeliveryDetail), (status = 404, description = "No such delivery.", body = ApiError))
)]
async fn get_delivery(
    State(state): State<AppState>,
    user: ApiUser,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<DeliveryDetail>> {
    let row = owned_delivery(&state, &user, &id, &delivery_id).await?;
    let attempts = super::attempts(&state.pool, row.delivery_id).await?;
    Ok(Json(DeliveryDetail {
        delivery: DeliveryView::from(&row),
        attempt_log: attempts.iter().map(AttemptView::from).collect(),
    }))
}

/// Sends a delivery's event again, now: a new delivery with the same body (and event id), retried
/// like any other.
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id."), ("delivery_id" = Uuid, Path, description = "The delivery to replay.")),
    responses(
        (status = 202, description = "Queued: the new delivery.", body = DeliveryView),
        (status = 404, description = "No such delivery.", body = ApiError),
    )
)]
async fn replay_delivery(
    State(state): State<AppState>,
    user: ApiUser,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response> {
    let row = owned_delivery(&state, &user, &id, &delivery_id).await?;
    let replayed = super::replay(&state.pool, user.user_id, row.endpoint_id, row.delivery_id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that delivery".into()))?;
    let new = super::find_delivery(&state.pool, user.user_id, row.endpoint_id, replayed)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that delivery".into()))?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(&new))).into_response())
}
