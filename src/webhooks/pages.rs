//! `GET/POST /account/webhooks`: the account page for webhook endpoints — register one (its
//! secret shown once), rotate its secret, delete it, see its recent deliveries with their
//! answers, and replay one.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    DEFAULT_OVERLAP, DEFAULT_THRESHOLD, DeliveryStatus, Endpoint, EndpointInput, EventType, InputErrors, MAX_ENDPOINTS,
};
use crate::{
    state::AppState,
    web::{AppError, CsrfForm, Layout, Result, Routes, SignedIn, render},
};

pub fn routes() -> Routes<AppState> {
    Routes::new().route("/account/webhooks", get(page).post(post))
}

/// Deliveries shown per endpoint.
const RECENT: i64 = 10;

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC")).unwrap_or_default()
}

pub struct DeliveryLine {
    pub delivery_id: Uuid,
    pub event_type: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub attempts: i32,
    pub last: String,
    pub created: String,
    pub next: Option<String>,
}

pub struct EndpointBlock {
    pub endpoint_id: Uuid,
    pub url: String,
    pub description: String,
    pub events: String,
    pub threshold: i64,
    pub secret_hint: String,
    pub previous_until: Option<String>,
    pub deliveries: Vec<DeliveryLine>,
}

/// The form's fields as typed.
#[derive(Default)]
pub struct Draft {
    pub url: String,
    pub description: String,
    pub events: Vec<EventType>,
    pub threshold: String,
}

impl Draft {
    pub fn has(&self, event: &EventType) -> bool {
        self.events.contains(event)
    }
}

#[derive(askama::Template)]
#[template(path = "webhooks/index.html")]
pub struct WebhooksPage {
    pub layout: Layout,
    pub endpoints: Vec<EndpointBlock>,
    pub all_events: Vec<(EventType, &'static str, &'static str)>,
    pub draft: Draft,
    pub errors: InputErrors,
    pub new_secret: Option<String>,
    pub notice: Option<String>,
    pub max_endpoints: i64,
}

impl WebhooksPage {
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field)
    }
}

async fn load(state: &AppState, user_id: Uuid) -> Result<Vec<EndpointBlock>> {
    let endpoints = super::list(&state.pool, user_id).await?;
    let now = OffsetDateTime::now_utc();
    let mut blocks = Vec::new();
    for endpoint in endpoints {
        let rows = super::deliveries(&state.pool, endpoint.endpoint_id, None, RECENT).await?;
        let deliveries = rows
            .iter()
            .map(|row| DeliveryLine {
                delivery_id: row.delivery_id,
                event_type: row.event_type.clone(),
                status: match row.status {
                    DeliveryStatus::Pending => "pending",
                    DeliveryStatus::Succeeded => "succeeded",
                    DeliveryStatus::Failed => "failed",
                },
                status_class: match row.status {
                    DeliveryStatus::Pending => "badge-warn",
                    DeliveryStatus::Succeeded => "badge-good",
                    DeliveryStatus::Failed => "badge-bad",
                },
                attempts: row.attempts,
                last: match (row.last_status_code, &row.last_error) {
                    (Some(code), _) => code.to_string(),
                    (None, Some(error)) => error.chars().take(80).collect(),
                    (None, None) => "—".into(),
                },
                created: fmt_time(row.created_at),
                next: (row.status == DeliveryStatus::Pending).then(|| fmt_time(row.next_attempt_at)),
            })
            .collect();
        blocks.push(EndpointBlock {
            endpoint_id: endpoint.endpoint_id,
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            events: endpoint.events.join(", "),
            threshold: endpoint.credits_low_threshold,
            secret_hint: endpoint.secret_hint(),
            previous_until: endpoint.previous_secret_expires_at.filter(|until| *until > now).map(fmt_time),
            deliveries,
        });
    }
    Ok(blocks)
}

fn all_events() -> Vec<(EventType, &'static str, &'static str)> {
    EventType::ALL
        .into_iter()
        .map(|e| {
            let field = match e {
                EventType::RunCompleted => "event_run_completed",
                EventType::JobFailed => "event_job_failed",
                EventType::CreditsLow => "event_credits_low",
            };
            (e, field, e.description())
        })
        .collect()
}

async fn build(
    state: &AppState,
    layout: Layout,
    user_id: Uuid,
    draft: Draft,
    errors: InputErrors,
    new_secret: Option<String>,
    notice: Option<String>,
) -> Result<WebhooksPage> {
    Ok(WebhooksPage {
        layout,
        endpoints: load(state, user_id).await?,
        all_events: all_events(),
        draft,
        errors,
        new_secret,
        notice,
        max_endpoints: MAX_ENDPOINTS,
    })
}

/// `GET /account/webhooks`.
async fn page(State(state): State<AppState>, SignedIn(user): SignedIn, layout: Layout) -> Result<Response> {
    let draft = Draft {
        events: vec![EventType::RunCompleted, EventType::JobFailed],
        threshold: DEFAULT_THRESHOLD.to_string(),
        ..Draft::default()
    };
    Ok(render(&build(&state, layout, user.id, draft, InputErrors::default(), None, None).await?))
}

#[derive(Deserialize)]
struct WebhookForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    event_run_completed: Option<String>,
    #[serde(default)]
    event_job_failed: Option<String>,
    #[serde(default)]
    event_credits_low: Option<String>,
    #[serde(default)]
    credits_low_threshold: String,
    #[serde(default)]
    endpoint_id: String,
    #[serde(default)]
    delivery_id: String,
}

/// A page that shows a secret is stored by no cache.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn owned(state: &AppState, user_id: Uuid, raw: &str) -> Result<Endpoint> {
    let id = AppError::parse_id(raw, "webhook endpoint")?;
    super::find(&state.pool, user_id, id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that webhook endpoint".into()))
}

/// `POST /account/webhooks`: `action=create` (fields `url`, `description`, `event_…` checkboxes,
/// `credits_low_threshold`), `rotate` and `delete` (`endpoint_id`), `replay` (`endpoint_id`,
/// `delivery_id`).
async fn post(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    CsrfForm(form): CsrfForm<WebhookForm>,
) -> Result<Response> {
    match form.action.as_str() {
        "create" => {
            let mut events = Vec::new();
            for (checked, event) in [
                (&form.event_run_completed, EventType::RunCompleted),
                (&form.event_job_failed, EventType::JobFailed),
                (&form.event_credits_low, EventType::CreditsLow),
            ] {
                if checked.is_some() {
                    events.push(event);
                }
            }
            let mut errors = InputErrors::default();
            let threshold = match form.credits_low_threshold.trim() {
                "" => DEFAULT_THRESHOLD,
                raw => raw.parse::<i64>().unwrap_or_else(|_| {
                    errors.0.push(("credits_low_threshold", "a whole number of credits".into()));
                    DEFAULT_THRESHOLD
                }),
            };
            let input = EndpointInput {
                url: form.url.trim().to_string(),
                description: form.description.trim().to_string(),
                events,
                credits_low_threshold: threshold,
            };
            let url = super::validate(&input, state.config.webhooks.allow_private, &mut errors).await;
            if errors.0.is_empty() && super::count(&state.pool, user.id).await? >= MAX_ENDPOINTS {
                errors.0.push(("url", format!("you have {MAX_ENDPOINTS} endpoints; delete one first")));
            }
            let draft = Draft {
                url: input.url.clone(),
                description: input.description.clone(),
                events: input.events.clone(),
                threshold: form.credits_low_threshold.clone(),
            };
            match url {
                Some(url) if errors.0.is_empty() => {
                    let endpoint = super::create(&state.pool, user.id, &url, &input).await?;
                    let notice = Some(format!("Endpoint {} registered.", endpoint.url));
                    let page =
                        build(&state, layout, user.id, Draft::default(), errors, Some(endpoint.secret), notice).await?;
                    Ok(no_store(render(&page)))
                }
                _ => {
                    let page = build(&state, layout, user.id, draft, errors, None, None).await?;
                    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
                }
            }
        }
        "rotate" => {
            let endpoint = owned(&state, user.id, &form.endpoint_id).await?;
            let rotated = super::rotate_secret(&state.pool, user.id, endpoint.endpoint_id, DEFAULT_OVERLAP)
                .await?
                .ok_or_else(|| AppError::NotFound("we could not find that webhook endpoint".into()))?;
            let notice = Some(format!(
                "New secret for {}. The old one keeps signing deliveries for 24 hours, next to the new one.",
                rotated.url
            ));
            let page =
                build(&state, layout, user.id, Draft::default(), InputErrors::default(), Some(rotated.secret), notice)
                    .await?;
            Ok(no_store(render(&page)))
        }
        "delete" => {
            let endpoint = owned(&state, user.id, &form.endpoint_id).await?;
            super::delete(&state.pool, user.id, endpoint.endpoint_id).await?;
            Ok(Redirect::to("/account/webhooks").into_response())
        }
        "replay" => {
            let endpoint = owned(&state, user.id, &form.endpoint_id).await?;
            let delivery_id = AppError::parse_id(&form.delivery_id, "delivery")?;
            super::replay(&state.pool, user.id, endpoint.endpoint_id, delivery_id)
                .await?
                .ok_or_else(|| AppError::NotFound("we could not find that delivery".into()))?;
            Ok(Redirect::to("/account/webhooks").into_response())
        }
        _ => Err(AppError::BadRequest("unknown action".into())),
    }
}
