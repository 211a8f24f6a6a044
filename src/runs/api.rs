//! The JSON API under `/api/v1`, authenticated with personal API keys
//! (`Authorization: Bearer fo_…`), and the page that creates and revokes them
//! (`GET/POST /account/api-keys`). Keys are stored as their SHA-256 only and shown once.
//! Errors are `{"error": {"code", "message"}}` (rendered by the error middleware).

use axum::{
    Form, Json, Router,
    extract::{DefaultBodyLimit, FromRequestParts, Path, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    RunView,
    create::{self, CreateError, RunInput},
    pages::check_reference,
};
use crate::{
    catalog::Mode,
    ledger,
    state::AppState,
    web::{AppError, Result, csrf, layout::Layout, render},
};

/// JSON run bodies carry the reference image as base64 (10 MB → about 13.4 MB).
pub const API_RUN_LIMIT: usize = 15 * 1024 * 1024;
const KEY_PREFIX: &str = "fo_";
const MAX_KEYS: i64 = 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account/api-keys", get(keys_page).post(keys_post))
        .route("/api/v1/me", get(me))
        .route("/api/v1/models", get(models))
        .route("/api/v1/quote", post(quote))
        .route("/api/v1/runs", post(create_run).layer(DefaultBodyLimit::max(API_RUN_LIMIT)))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/jobs/{job_id}/image", get(job_image))
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The user an API request acts for.
pub struct ApiUser {
    pub user_id: Uuid,
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|s| s.starts_with(KEY_PREFIX))
            .ok_or(AppError::Unauthorized)?;
        // One statement: find the key, and record its use at most once a minute. Writing the
        // key's row on every request made a client's parallel requests queue on its row lock
        // (and cost a WAL flush each).
        let user_id: Option<Uuid> = sqlx::query_scalar(
            "WITH key AS (
                 SELECT api_key_id, user_id, last_used_at FROM api_key WHERE secret_hash = $1 AND revoked_at IS NULL
             ), touched AS (
                 UPDATE api_key SET last_used_at = now() FROM key
                 WHERE api_key.api_key_id = key.api_key_id
                   AND (key.last_used_at IS NULL OR key.last_used_at < now() - interval '1 minute')
             )
             SELECT user_id FROM key",
        )
        .bind(hash(secret))
        .fetch_optional(&state.pool)
        .await?;
        user_id.map(|user_id| ApiUser { user_id }).ok_or(AppError::Unauthorized)
    }
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
    let email: String = sqlx::query_scalar("SELECT email FROM app_user WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&state.pool)
        .await?;
    let balance = ledger::balance(&state.pool, user.user_id).await.map_err(|e| AppError::Internal(e.into()))?;
    Ok(Json(Me { id: user.user_id, email, available: balance.available, held: balance.held }))
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
async fn quote(State(state): State<AppState>, user: ApiUser, Json(body): Json<QuoteBody>) -> Result<Json<QuoteJson>> {
    let catalog = state.catalog.current();
    let mode = body.mode.unwrap_or_else(|| "2k".into());
    let quote = create::quote(&catalog, &body.models, &mode).map_err(|e| AppError::Unprocessable(e.summary()))?;
    let available =
        ledger::balance(&state.pool, user.user_id).await.map_err(|e| AppError::Internal(e.into()))?.available;
    Ok(Json(QuoteJson {
        mode,
        lines: quote
            .lines
            .iter()
            .map(|l| QuoteLineJson {
                model: l.model.slug.clone(),
                variant: l.variant.slug.clone(),
                name: l.display_name(),
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
    Json(body): Json<RunBody>,
) -> Result<Response> {
    let key = match headers.get("idempotency-key") {
        Some(value) => {
            let raw = value.to_str().map_err(|_| AppError::BadRequest("Idempotency-Key must be text".into()))?;
            create::check_idempotency_key(raw).map_err(AppError::BadRequest)?.to_string()
        }
        None => create::new_idempotency_key(),
    };
    let reference = match body.reference_image.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(encoded) => {
            let data = encoded.split_once(";base64,").map(|(_, d)| d).unwrap_or(encoded);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| AppError::Unprocessable("reference_image: not valid base64".into()))?;
            Some(bytes::Bytes::from(bytes))
        }
    };
    let reference = check_reference(reference).await?;
    let input = RunInput {
        prompt: body.prompt,
        models: body.models,
        mode: body.mode.unwrap_or_default(),
        aspect_ratio: body.aspect_ratio.unwrap_or_default(),
        seed: body.seed.map(|s| s.to_string()).unwrap_or_default(),
    };
    let catalog = state.catalog.current();
    let valid = create::validate(&catalog, &input, reference).map_err(|e| AppError::Unprocessable(e.summary()))?;
    let created = match create::create_run(&state.pool, &state.store, user.user_id, &valid, &key).await {
        Ok(created) => created,
        Err(CreateError::InsufficientCredits { need, have }) => {
            return Err(AppError::InsufficientCredits { need, have });
        }
        Err(CreateError::Db(err)) => return Err(err.into()),
        Err(CreateError::Other(err)) => return Err(AppError::Internal(err)),
    };
    let run = super::find_owned(&state.pool, created.run_id, user.user_id).await?.ok_or_else(AppError::not_found)?;
    let view = RunView::load(&state.pool, &run).await?;
    let status = if created.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let location = format!("/api/v1/runs/{}", created.run_id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

/// `GET /api/v1/runs/{id}`: the run and its jobs (404 for other users' runs).
async fn get_run(State(state): State<AppState>, user: ApiUser, Path(id): Path<String>) -> Result<Json<RunView>> {
    let not_found = || AppError::NotFound("no such run".into());
    let run_id: Uuid = id.parse().map_err(|_| not_found())?;
    let run = super::find_owned(&state.pool, run_id, user.user_id).await?.ok_or_else(not_found)?;
    Ok(Json(RunView::load(&state.pool, &run).await?))
}

/// `GET /api/v1/runs/{id}/jobs/{job_id}/image`: a delivered image's bytes, for key holders
/// (the `/media` URLs need a browser session).
async fn job_image(
    State(state): State<AppState>,
    user: ApiUser,
    Path((id, job_id)): Path<(String, String)>,
) -> Result<Response> {
    let not_found = || AppError::NotFound("no such image".into());
    let run_id: Uuid = id.parse().map_err(|_| not_found())?;
    let job_id: Uuid = job_id.parse().map_err(|_| not_found())?;
    let run = super::find_owned(&state.pool, run_id, user.user_id).await?.ok_or_else(not_found)?;
    let jobs = crate::jobs::for_run(&state.pool, run.run_id).await?;
    let key = jobs.into_iter().find(|j| j.job_id == job_id).and_then(|j| j.image_key).ok_or_else(not_found)?;
    let media = crate::storage::find(&state.pool, &key).await?.ok_or_else(not_found)?;
    let bytes = state.store.get(&key).await?.ok_or_else(not_found)?;
    let content_type = header::HeaderValue::from_str(&media.content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

pub struct KeyRow {
    pub api_key_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: Option<String>,
    pub revoked: bool,
}

#[derive(askama::Template)]
#[template(path = "runs/api_keys.html")]
pub struct KeysPage {
    pub layout: Layout,
    pub keys: Vec<KeyRow>,
    pub new_secret: Option<String>,
    pub name: String,
    pub error: Option<String>,
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap_or_default()
}

#[derive(sqlx::FromRow)]
struct KeyRecord {
    api_key_id: Uuid,
    name: String,
    prefix: String,
    created_at: OffsetDateTime,
    last_used_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

async fn load_keys(state: &AppState, user_id: Uuid) -> Result<Vec<KeyRow>> {
    let rows = sqlx::query_as::<_, KeyRecord>(
        "SELECT api_key_id, name, prefix, created_at, last_used_at, revoked_at FROM api_key
         WHERE user_id = $1 ORDER BY created_at DESC",
    )
    .bind(user_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| KeyRow {
            api_key_id: r.api_key_id,
            name: r.name,
            prefix: r.prefix,
            created: fmt_time(r.created_at),
            last_used: r.last_used_at.map(fmt_time),
            revoked: r.revoked_at.is_some(),
        })
        .collect())
}

/// `GET /account/api-keys`.
async fn keys_page(State(state): State<AppState>, layout: Layout) -> Result<Response> {
    let user_id = layout.require_user()?.id;
    let keys = load_keys(&state, user_id).await?;
    Ok(render(&KeysPage { layout, keys, new_secret: None, name: String::new(), error: None }))
}

#[derive(Deserialize)]
struct KeysForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    api_key_id: String,
}

/// `POST /account/api-keys`: `action=create` (field `name`) shows the new key once;
/// `action=revoke` (field `api_key_id`) revokes one.
async fn keys_post(State(state): State<AppState>, layout: Layout, Form(form): Form<KeysForm>) -> Result<Response> {
    let user_id = layout.require_user()?.id;
    let session = layout.session.as_ref().ok_or(AppError::CsrfFailed)?;
    csrf::verify(session, &form.csrf_token).await?;
    match form.action.as_str() {
        "revoke" => {
            let id: Uuid = form.api_key_id.parse().map_err(|_| AppError::NotFound("no such API key".into()))?;
            let done = sqlx::query(
                "UPDATE api_key SET revoked_at = now() WHERE api_key_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(user_id)
            .execute(&state.pool)
            .await?;
            if done.rows_affected() == 0 && !load_keys(&state, user_id).await?.iter().any(|k| k.api_key_id == id) {
                return Err(AppError::NotFound("no such API key".into()));
            }
            Ok(Redirect::to("/account/api-keys").into_response())
        }
        "create" => {
            let name = form.name.trim().to_string();
            let error = if name.is_empty() {
                Some("give the key a name, e.g. the script that uses it")
            } else if name.chars().count() > 100 {
                Some("the name may be at most 100 characters")
            } else {
                None
            };
            let active: i64 =
                sqlx::query_scalar("SELECT count(*) FROM api_key WHERE user_id = $1 AND revoked_at IS NULL")
                    .bind(user_id)
                    .fetch_one(&state.pool)
                    .await?;
            let error = error.or((active >= MAX_KEYS).then_some("you have 20 active keys; revoke one first"));
            if let Some(error) = error {
                let keys = load_keys(&state, user_id).await?;
                let page = KeysPage { layout, keys, new_secret: None, name, error: Some(error.into()) };
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
            }
            let random: [u8; 32] = rand::random();
            let secret = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
            let prefix: String = secret.chars().take(10).collect();
            sqlx::query(
                "INSERT INTO api_key (api_key_id, user_id, name, prefix, secret_hash) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(Uuid::now_v7())
            .bind(user_id)
            .bind(&name)
            .bind(&prefix)
            .bind(hash(&secret))
            .execute(&state.pool)
            .await?;
            let keys = load_keys(&state, user_id).await?;
            let mut response =
                render(&KeysPage { layout, keys, new_secret: Some(secret), name: String::new(), error: None });
            response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            Ok(response)
        }
        _ => Err(AppError::BadRequest("unknown action".into())),
    }
}
