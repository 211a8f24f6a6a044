//! The JSON API under `/api/v1`, authenticated with personal API keys
//! (`Authorization: Bearer fo_…`, see `accounts::api_keys`; the keys are managed on
//! `/account/api-keys`). Errors are `{"error": {"code", "message"}}` (rendered by the error
//! middleware).

use axum::{
    Json,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    RunView,
    create::{self, RunInput},
};
use crate::{
    accounts,
    catalog::Mode,
    ledger,
    state::AppState,
    web::{ApiJson, ApiUser, AppError, Result, Routes},
};

/// JSON run bodies carry the reference image as base64 (10 MB → about 13.4 MB).
pub const API_RUN_LIMIT: usize = 15 * 1024 * 1024;

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/models", get(models))
        .route("/api/v1/quote", post(quote))
        .route("/api/v1/runs", post(create_run).layer(DefaultBodyLimit::max(API_RUN_LIMIT)))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/jobs/{job_id}/image", get(job_image))
}

#[derive(Serialize)]
struct Me {
    id: Uuid,
    email: String,
    available: i64,
    held: i64,
}

/// `GET /api/v1/me`: who the key belongs to and their balance.
async fn me(State(state): State<AppState>, user: ApiUser) -> Result<Json<Me>> {
    let me = accounts::current_user(&state.pool, user.user_id).await?.ok_or(AppError::Unauthorized)?;
    Ok(Json(Me { id: me.id, email: me.email, available: me.available, held: me.held }))
}

#[derive(Serialize)]
struct ApiModel {
    slug: String,
    name: String,
    provider: String,
    image_to_image: bool,
    aspect_ratios: Vec<String>,
    variants: Vec<ApiVariant>,
}

#[derive(Serialize)]
struct ApiVariant {
    slug: String,
    name: String,
    is_default: bool,
    /// Credits per image by mode (`2k`, `4k`); a missing mode is not offered.
    prices: serde_json::Map<String, serde_json::Value>,
}

/// `GET /api/v1/models`: the catalog with prices.
async fn models(State(state): State<AppState>, _user: ApiUser) -> Json<Vec<ApiModel>> {
    let catalog = state.catalog.current();
    Json(
        catalog
            .models()
            .iter()
            .map(|m| ApiModel {
                slug: m.slug.clone(),
                name: m.name.clone(),
                provider: m.provider.clone(),
                image_to_image: m.image_to_image,
                aspect_ratios: m.aspect_ratios.clone(),
                variants: m
                    .variants
                    .iter()
                    .map(|v| ApiVariant {
                        slug: v.slug.clone(),
                        name: v.name.clone(),
                        is_default: v.is_default,
                        prices: [Mode::TwoK, Mode::FourK]
                            .into_iter()
                            .filter_map(|mode| v.price(mode).map(|p| (mode.as_str().to_string(), p.into())))
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    )
}

#[derive(Deserialize)]
struct QuoteBody {
    models: Vec<String>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Serialize)]
struct QuoteLineJson {
    model: String,
    variant: String,
    name: String,
    price: i64,
}

#[derive(Serialize)]
struct QuoteJson {
    mode: String,
    lines: Vec<QuoteLineJson>,
    total: i64,
    available: i64,
    /// Credits missing for this run (0 when the balance covers it).
    missing: i64,
}

/// `POST /api/v1/quote`: what a run would cost, against the balance.
async fn quote(
    State(state): State<AppState>,
    user: ApiUser,
    ApiJson(body): ApiJson<QuoteBody>,
) -> Result<Json<QuoteJson>> {
    let catalog = state.catalog.current();
    let mode = body.mode.unwrap_or_else(|| "2k".into());
    let quote = create::quote(&catalog, &body.models, &mode)?;
    let available = ledger::balance(&state.pool, user.user_id).await?.available;
    Ok(Json(QuoteJson {
        mode,
        lines: quote
            .lines
            .iter()
            .map(|l| QuoteLineJson {
                model: l.model.slug.clone(),
                variant: l.variant.slug.clone(),
                name: l.choice().label(),
                price: l.price,
            })
            .collect(),
        total: quote.total,
        available,
        missing: (quote.total - available).max(0),
    }))
}

#[derive(Deserialize)]
struct RunBody {
    prompt: String,
    models: Vec<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    aspect_ratio: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    /// Base64 (standard alphabet, optionally a `data:` URL).
    #[serde(default)]
    reference_image: Option<String>,
}

/// `POST /api/v1/runs`: the same validation, pricing and errors as the studio form. An
/// `Idempotency-Key` header makes retries return the same run (200 instead of 201).
async fn create_run(
    State(state): State<AppState>,
    user: ApiUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<Response> {
    let key = match headers.get("idempotency-key") {
        Some(value) => {
            let raw = value.to_str().map_err(|_| AppError::BadRequest("Idempotency-Key must be text".into()))?;
            create::check_idempotency_key(raw).map_err(AppError::BadRequest)?.to_string()
        }
        None => create::new_idempotency_key(),
    };
    let upload = match body.reference_image.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(encoded) => {
            let data = encoded.split_once(";base64,").map(|(_, d)| d).unwrap_or(encoded);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| AppError::Unprocessable("reference_image: not valid base64".into()))?;
            Some(bytes::Bytes::from(bytes))
        }
    };
    let input = RunInput {
        prompt: body.prompt,
        models: body.models,
        mode: body.mode.unwrap_or_default(),
        aspect_ratio: body.aspect_ratio.unwrap_or_default(),
        seed: body.seed.map(|s| s.to_string()).unwrap_or_default(),
    };
    let catalog = state.catalog.current();
    let created = create::submit(&state.pool, &state.store, &catalog, user.user_id, &input, upload, &key).await?;
    let run = super::find_owned(&state.pool, created.run_id, user.user_id).await?.ok_or_else(AppError::not_found)?;
    let view = RunView::load(&state.pool, &run).await?;
    let status = if created.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let location = format!("/api/v1/runs/{}", created.run_id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

/// `GET /api/v1/runs/{id}`: the run and its jobs (404 for other users' runs).
async fn get_run(State(state): State<AppState>, user: ApiUser, Path(id): Path<String>) -> Result<Json<RunView>> {
    let run_id = AppError::parse_id(&id, "run")?;
    let run = super::find_owned(&state.pool, run_id, user.user_id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that run".into()))?;
    Ok(Json(RunView::load(&state.pool, &run).await?))
}

/// `GET /api/v1/runs/{id}/jobs/{job_id}/image`: a delivered image's bytes, for key holders
/// (the `/media` URLs need a browser session).
async fn job_image(
    State(state): State<AppState>,
    user: ApiUser,
    Path((id, job_id)): Path<(String, String)>,
) -> Result<Response> {
    let not_found = || AppError::NotFound("we could not find that image".into());
    let run_id = AppError::parse_id(&id, "image")?;
    let job_id = AppError::parse_id(&job_id, "image")?;
    let run = super::find_owned(&state.pool, run_id, user.user_id).await?.ok_or_else(not_found)?;
    let jobs = crate::jobs::for_run(&state.pool, run.run_id).await?;
    let key = jobs.into_iter().find(|j| j.job_id == job_id).and_then(|j| j.image_key).ok_or_else(not_found)?;
    let media = crate::storage::find(&state.pool, &key).await?.ok_or_else(not_found)?;
    let bytes = state.store.get(&key).await?.ok_or_else(not_found)?;
    let content_type = header::HeaderValue::from_str(&media.content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}
