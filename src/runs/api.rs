//! The JSON API under `/api/v1`, authenticated with personal API keys
//! (`Authorization: Bearer fo_…`, see `accounts::api_keys`; the keys are managed on
//! `/account/api-keys`). Errors are `{"error": {"code", "message"}}` (rendered by the error
//! middleware). Each handler's `#[utoipa::path]` attribute is its entry in the OpenAPI document
//! (`GET /api/v1/openapi.json`, the reference page `GET /docs/api`).

use axum::{
    Json,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::UtoipaMethodRouterExt, routes};
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
    web::{
        ApiJson, ApiUser, AppError, Result, Routes,
        error::ApiError,
        pagination::{PageQuery, split_page},
    },
};

/// JSON run bodies carry the reference image as base64 (10 MB → about 13.4 MB).
pub const API_RUN_LIMIT: usize = 15 * 1024 * 1024;

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .api(routes!(me))
        .api(routes!(models))
        .api(routes!(quote))
        .api(routes!(create_run).map(|m| m.layer(DefaultBodyLimit::max(API_RUN_LIMIT))))
        .api(routes!(list_runs))
        .api(routes!(get_run))
        .api(routes!(job_image))
}

/// The owner of the key and their balance.
#[derive(Serialize, ToSchema)]
struct Me {
    id: Uuid,
    #[schema(example = "ada@example.com")]
    email: String,
    /// Credits you can spend now.
    #[schema(example = 62)]
    available: i64,
    /// Credits reserved by runs still generating.
    #[schema(example = 38)]
    held: i64,
}

/// Who the key belongs to, and their balance.
#[utoipa::path(get, path = "/api/v1/me", tag = "account", responses((status = 200, body = Me)))]
async fn me(State(state): State<AppState>, user: ApiUser) -> Result<Json<Me>> {
    let me = accounts::current_user(&state.pool, user.user_id).await?.ok_or(AppError::Unauthorized)?;
    Ok(Json(Me { id: me.id, email: me.email, available: me.available, held: me.held }))
}

/// A model of the catalog.
#[derive(Serialize, ToSchema)]
#[schema(as = Model)]
struct ApiModel {
    #[schema(example = "flux-2")]
    slug: String,
    #[schema(example = "Flux 2")]
    name: String,
    /// The maker's catalog slug.
    #[schema(example = "bfl")]
    provider: String,
    /// Who makes the model.
    #[schema(example = "Black Forest Labs")]
    maker: String,
    /// `active`, or `retiring` when the maker has announced its shutdown (retired models are
    /// not listed).
    lifecycle: crate::catalog::Lifecycle,
    /// Billed by usage: each variant's price is the most an image can cost (the hold); the
    /// charge is the provider's reported usage, capped by it.
    usage_billed: bool,
    /// Whether the model accepts a `reference_image`.
    image_to_image: bool,
    #[schema(example = json!(["1:1", "16:9", "9:16", "3:4", "4:3"]))]
    aspect_ratios: Vec<String>,
    variants: Vec<ApiVariant>,
}

/// A variant of a model, with its prices.
#[derive(Serialize, ToSchema)]
#[schema(as = Variant)]
struct ApiVariant {
    #[schema(example = "standard")]
    slug: String,
    #[schema(example = "Standard")]
    name: String,
    /// The variant used when a run names only the model.
    is_default: bool,
    /// Credits per image by mode (`2k`, `4k`); a missing mode is not offered.
    #[schema(value_type = std::collections::BTreeMap<String, i64>, example = json!({"2k": 22, "4k": 44}))]
    prices: serde_json::Map<String, serde_json::Value>,
}

/// The catalog: models, variants, aspect ratios and prices per mode.
#[utoipa::path(get, path = "/api/v1/models", tag = "catalog", responses((status = 200, body = Vec<ApiModel>)))]
async fn models(State(state): State<AppState>, _user: ApiUser) -> Json<Vec<ApiModel>> {
    let catalog = state.catalog.current();
    Json(
        catalog
            .offered_models()
            .map(|m| ApiModel {
                slug: m.slug.clone(),
                name: m.name.clone(),
                provider: m.provider.clone(),
                maker: m.provider_name.clone(),
                lifecycle: m.lifecycle,
                usage_billed: m.is_usage_billed(),
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

/// Models to price.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"models": ["flux-2", "flux-ultra-1-1"], "mode": "2k"}))]
struct QuoteBody {
    /// 2–4 choices, each `model` or `model:variant`.
    #[schema(example = json!(["flux-2", "flux-2:klein-9b"]))]
    models: Vec<String>,
    /// `2k` (default) or `4k`.
    #[serde(default)]
    #[schema(example = "2k")]
    mode: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = QuoteLine)]
struct QuoteLineJson {
    #[schema(example = "flux-2")]
    model: String,
    #[schema(example = "standard")]
    variant: String,
    #[schema(example = "Flux 2")]
    name: String,
    #[schema(example = 22)]
    price: i64,
}

/// What a run would cost.
#[derive(Serialize, ToSchema)]
#[schema(as = Quote)]
struct QuoteJson {
    #[schema(example = "2k")]
    mode: String,
    lines: Vec<QuoteLineJson>,
    #[schema(example = 38)]
    total: i64,
    #[schema(example = 100)]
    available: i64,
    /// Credits missing for this run (0 when the balance covers it).
    #[schema(example = 0)]
    missing: i64,
}

/// What a run of these models would cost, against your balance.
#[utoipa::path(
    post, path = "/api/v1/quote", tag = "runs",
    request_body = QuoteBody,
    responses(
        (status = 200, body = QuoteJson),
        (status = 422, description = "Unknown models, too few or too many, or a mode a model does not offer.", body = ApiError),
    )
)]
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

/// A run to start.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"prompt": "a candid café portrait, natural window light", "models": ["flux-2", "flux-ultra-1-1"], "mode": "2k", "aspect_ratio": "3:4", "seed": 42}))]
struct RunBody {
    /// 1–2000 characters.
    #[schema(example = "a candid café portrait, natural window light")]
    prompt: String,
    /// 2–4 choices, each `model` or `model:variant`.
    #[schema(example = json!(["flux-2", "flux-ultra-1-1"]))]
    models: Vec<String>,
    /// `2k` (default) or `4k`.
    #[serde(default)]
    #[schema(example = "2k")]
    mode: Option<String>,
    /// One every chosen model supports (default `1:1`).
    #[serde(default)]
    #[schema(example = "3:4")]
    aspect_ratio: Option<String>,
    /// The same seed goes to every model (default: random).
    #[serde(default)]
    #[schema(example = 42)]
    seed: Option<u64>,
    /// Base64 (standard alphabet, optionally a `data:` URL) of a PNG, JPEG or WebP: at most
    /// 10 MB, 25 megapixels and 8192 px a side; only for models that accept one.
    #[serde(default)]
    reference_image: Option<String>,
    /// What the run is for: a use case's slug (`GET /api/v1/leaderboard` lists the boards) or
    /// `other`. Runs made through the API are not blind.
    #[serde(default)]
    #[schema(example = "portrait")]
    use_case: Option<String>,
}

/// Starts a run: one job per model, each charged only when its image is delivered. The same
/// validation, pricing and errors as the studio. Jobs are queued fairly between users; each
/// queued job shows its place and estimated start (`queue`). An `Idempotency-Key` makes a retry return the
/// same run (`201` the first time, `200` afterwards; the same key with another request is a
/// `409`).
#[utoipa::path(
    post, path = "/api/v1/runs", tag = "runs",
    request_body = RunBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–200 printable characters; a retry with the same key and body returns the same run.", example = "3f1c9a52-run-42")),
    responses(
        (status = 201, description = "The run was created.", body = RunView,
            headers(("Location" = String, description = "The run: `/api/v1/runs/{id}`"))),
        (status = 200, description = "A retry with an `Idempotency-Key` already used for this request: the same run.", body = RunView,
            headers(("Location" = String, description = "The run: `/api/v1/runs/{id}`"))),
        (status = 402, description = "Not enough credits (the message says how many are needed).", body = ApiError),
        (status = 409, description = "The `Idempotency-Key` was used for a different request.", body = ApiError),
        (status = 422, description = "Missing or invalid fields (the message names them).", body = ApiError),
        (status = 429, description = "Too many requests with this key, or too many of your jobs already waiting in the queue (`FACEOFF_API_MAX_QUEUED_JOBS`): nothing was created.", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
        (status = 503, description = "The generation queue is backed up (its oldest job waited longer than `FACEOFF_QUEUE_MAX_AGE_SECS`): new API runs are refused for now; the studio keeps working.", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    )
)]
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
        use_case: body.use_case.unwrap_or_default(),
        blind: false,
    };
    let catalog = state.catalog.current();
    let created = create::submit(
        &state.pool,
        &state.store,
        &catalog,
        &state.config.queue,
        crate::jobs::Source::Api,
        user.user_id,
        &input,
        upload,
        &key,
    )
    .await?;
    // A new run is answered from what its creation statement wrote and counted; a replayed one
    // is read back.
    let view = match &created.fresh {
        Some(fresh) => RunView::fresh(fresh),
        None => {
            let run =
                super::find_owned(&state.pool, created.run_id, user.user_id).await?.ok_or_else(AppError::not_found)?;
            RunView::load(&state.pool, &run).await?
        }
    };
    let status = if created.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let location = format!("/api/v1/runs/{}", created.run_id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

/// A page of runs.
#[derive(Serialize, ToSchema)]
struct RunList {
    /// Newest first.
    data: Vec<RunView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Your runs, newest first, a page at a time.
#[utoipa::path(
    get, path = "/api/v1/runs", tag = "runs",
    params(PageQuery),
    responses(
        (status = 200, body = RunList),
        (status = 400, description = "A cursor this list did not give out, or a malformed query.", body = ApiError),
        (status = 422, description = "`limit` outside 1–100.", body = ApiError),
    )
)]
async fn list_runs(
    State(state): State<AppState>,
    user: ApiUser,
    Query(query): Query<PageQuery>,
) -> Result<Json<RunList>> {
    let limit = query.limit()?;
    let after = query.position(|text| {
        let (nanos, id) = text.split_once('/')?;
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
        Some((at, id.parse::<Uuid>().ok()?))
    })?;
    let runs = super::list_after(&state.pool, user.user_id, after, limit + 1).await?;
    let (runs, next_cursor) =
        split_page(runs, limit, |run| format!("{}/{}", run.created_at.unix_timestamp_nanos(), run.run_id));
    let ids: Vec<Uuid> = runs.iter().map(|r| r.run_id).collect();
    let jobs = crate::jobs::for_runs(&state.pool, &ids).await?;
    let voted = super::voted(&state.pool, &ids).await?;
    let data = runs
        .iter()
        .map(|run| {
            let own: Vec<_> = jobs.iter().filter(|j| j.run_id == run.run_id).cloned().collect();
            RunView::for_owner(run, &own, voted.contains(&run.run_id))
        })
        .collect();
    Ok(Json(RunList { data, next_cursor }))
}

/// A run and its jobs. Poll it, or register a webhook for `run.completed`.
#[utoipa::path(
    get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id.")),
    responses(
        (status = 200, body = RunView),
        (status = 404, description = "No such run (also for other users' runs).", body = ApiError),
    )
)]
async fn get_run(State(state): State<AppState>, user: ApiUser, Path(id): Path<String>) -> Result<Json<RunView>> {
    let run_id = AppError::parse_id(&id, "run")?;
    let run = super::find_owned(&state.pool, run_id, user.user_id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that run".into()))?;
    Ok(Json(RunView::load(&state.pool, &run).await?))
}

/// A delivered image's bytes (the `image_url` of a job needs a browser session; this needs the
/// key).
#[utoipa::path(
    get, path = "/api/v1/runs/{id}/jobs/{job_id}/image", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id."), ("job_id" = Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The image.", content(
            (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/webp"))),
        (status = 404, description = "No such run or job, or no image (yet).", body = ApiError),
    )
)]
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
