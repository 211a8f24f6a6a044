//! Webhooks for API users: a user registers endpoint URLs and chooses events (`run.completed`,
//! `job.failed`, `credits.low`); each event is written as a small row in the transaction of its
//! cause ([`outbox`]: the settlement of a run's last job, a job that fails, a run that takes
//! the balance below the endpoint's threshold), and delivered in the background ([`delivery`]):
//! signed the way Stripe signs, retried with exponential backoff for a day, every attempt and
//! its answer recorded, replayable. URLs are checked against SSRF ([`ssrf`]). SQL on
//! `webhook_endpoint`, `webhook_event`, `webhook_delivery` and `webhook_attempt` lives here;
//! the API is in [`api`], the account page in [`pages`].
//!
//! **Signing secrets are stored as they are, not encrypted.** Deliveries must be signed with
//! them, so they have to be readable by every instance; the only key we could encrypt them with
//! would live in this same database (as the CSRF key does, `app_secret`), so a dump that leaks
//! the secrets would leak that key too. Instead: a secret is shown once (at creation and
//! rotation), never logged and never returned by the API again; a leak lets someone forge
//! deliveries to that user's endpoint until they rotate it, and a rotation is one call. An
//! encryption key kept outside the database (a KMS, an environment secret) would protect a dump
//! and is the change to make if dumps leave the operator's hands.

use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

pub mod api;
pub mod delivery;
pub mod outbox;
pub mod pages;
pub mod ssrf;

pub use delivery::{Deliverer, RETRY_WINDOW, next_delay};

/// A time as RFC 3339 text (the API's and the events' format).
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Endpoints a user may have.
pub const MAX_ENDPOINTS: i64 = 10;
/// The longest description of an endpoint.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// The default `credits_low_threshold`.
pub const DEFAULT_THRESHOLD: i64 = 50;
/// How long a rotated secret keeps signing unless asked otherwise (a day, as Stripe's default).
pub const DEFAULT_OVERLAP: time::Duration = time::Duration::hours(24);
/// The longest overlap a rotation may ask for.
pub const MAX_OVERLAP: time::Duration = time::Duration::days(7);
/// The signature header of every delivery: `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]`.
pub const SIGNATURE_HEADER: &str = "Faceoff-Signature";

/// The events an endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    /// Every job of a run is settled: the run and its jobs, with images and charges.
    #[serde(rename = "run.completed")]
    RunCompleted,
    /// A job failed, was blocked by the provider's safety filter or timed out (never charged).
    #[serde(rename = "job.failed")]
    JobFailed,
    /// A run took your available balance below the endpoint's `credits_low_threshold`.
    #[serde(rename = "credits.low")]
    CreditsLow,
}

impl EventType {
    pub const ALL: [EventType; 3] = [EventType::RunCompleted, EventType::JobFailed, EventType::CreditsLow];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RunCompleted => "run.completed",
            EventType::JobFailed => "job.failed",
            EventType::CreditsLow => "credits.low",
        }
    }

    pub fn parse(raw: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == raw.trim())
    }

    pub fn description(self) -> &'static str {
        match self {
            EventType::RunCompleted => "every job of a run is settled (delivered, failed, blocked or timed out)",
            EventType::JobFailed => "a job failed, was blocked or timed out (it is not charged)",
            EventType::CreditsLow => "a run took your available credits below the endpoint's threshold",
        }
    }
}

/// `run.completed`: the run and its jobs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunCompletedData {
    pub run: crate::runs::RunView,
}

/// `job.failed`: the job, and its run's id.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobFailedData {
    pub run_id: Uuid,
    pub job: crate::runs::JobView,
}

/// `credits.low`: the available balance just after the run that crossed the threshold.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreditsLowData {
    #[schema(example = 12)]
    pub available: i64,
}

macro_rules! event_body {
    ($name:ident, $data:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
        pub struct $name {
            /// The event's id: deliveries and replays of one event share it (deduplicate on it).
            pub id: Uuid,
            #[serde(rename = "type")]
            pub kind: EventType,
            /// When it happened (RFC 3339).
            #[schema(format = DateTime)]
            pub created_at: String,
            pub data: $data,
        }
    };
}

event_body!(
    RunCompletedEvent,
    RunCompletedData,
    "The body of a `run.completed` delivery (the same bytes in every attempt and replay)."
);
event_body!(
    JobFailedEvent,
    JobFailedData,
    "The body of a `job.failed` delivery (the same bytes in every attempt and replay)."
);
event_body!(
    CreditsLowEvent,
    CreditsLowData,
    "The body of a `credits.low` delivery (the same bytes in every attempt and replay)."
);

/// An endpoint as stored (with its secrets: never shown after creation or rotation).
#[derive(Debug, Clone, FromRow)]
pub struct Endpoint {
    pub endpoint_id: Uuid,
    pub user_id: Uuid,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub credits_low_threshold: i64,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl Endpoint {
    pub fn event_types(&self) -> Vec<EventType> {
        self.events.iter().filter_map(|e| EventType::parse(e)).collect()
    }

    /// The secrets that sign a delivery at `now`: the current one, and the previous one during
    /// a rotation's overlap.
    pub fn signing_secrets(&self, now: OffsetDateTime) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_secret_expires_at)
            && until > now
        {
            secrets.push(previous);
        }
        secrets
    }

    /// The first characters of the secret, so the owner can tell secrets apart.
    pub fn secret_hint(&self) -> String {
        format!("{}…", self.secret.chars().take(12).collect::<String>())
    }
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, user_id, url, description, events, credits_low_threshold, secret, \
                                previous_secret, previous_secret_expires_at, created_at";

/// A fresh signing secret: `whsec_` and 32 random bytes (base64url).
pub fn new_secret() -> String {
    use base64::Engine;
    let random: [u8; 32] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random))
}

/// What an endpoint is to be (checked by [`validate`]).
#[derive(Debug, Clone)]
pub struct EndpointInput {
    pub url: String,
    pub description: String,
    pub events: Vec<EventType>,
    pub credits_low_threshold: i64,
}

/// The problems of an endpoint's fields, by field, in words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputErrors(pub Vec<(&'static str, String)>);

impl InputErrors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(f, _)| *f == field).map(|(_, m)| m.as_str())
    }
    pub fn summary(&self) -> String {
        self.0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; ")
    }
}

/// Parses event names (unknown ones are an error for `events`).
pub fn parse_events(raw: &[String], errors: &mut InputErrors) -> Vec<EventType> {
    let mut events = Vec::new();
    for name in raw {
        match EventType::parse(name) {
            Some(event) if !events.contains(&event) => events.push(event),
            Some(_) => {}
            None => errors.0.push((
                "events",
                format!("there is no event called {name:?} (choose from run.completed, job.failed, credits.low)"),
            )),
        }
    }
    events
}

/// Checks an endpoint's fields; the URL against SSRF too (resolving its host).
pub async fn validate(input: &EndpointInput, allow_private: bool, errors: &mut InputErrors) -> Option<String> {
    if input.events.is_empty() && errors.get("events").is_none() {
        errors.0.push(("events", "choose at least one event".into()));
    }
    if input.description.chars().count() > MAX_DESCRIPTION_CHARS {
        errors.0.push(("description", format!("at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    if !(1..=1_000_000_000).contains(&input.credits_low_threshold) {
        errors.0.push(("credits_low_threshold", "between 1 and 1000000000 credits".into()));
    }
    match ssrf::check(&input.url, allow_private).await {
        Ok(url) => Some(url.to_string()),
        Err(problem) => {
            errors.0.push(("url", problem.to_string()));
            None
        }
    }
}

pub async fn count(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM webhook_endpoint WHERE user_id = $1").bind(user_id).fetch_one(db).await
}

/// Creates an endpoint (its fields already validated, `url` normalised) with a fresh secret.
pub async fn create(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    url: &str,
    input: &EndpointInput,
) -> Result<Endpoint, sqlx::Error> {
    let sql = format!(
        "INSERT INTO webhook_endpoint (endpoint_id, user_id, url, description, events, credits_low_threshold, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENDPOINT_COLUMNS}"
    );
    let events: Vec<&str> = input.events.iter().map(|e| e.as_str()).collect();
    sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(url)
        .bind(input.description.trim())
        .bind(&events)
        .bind(input.credits_low_threshold)
        .bind(new_secret())
        .fetch_one(db)
        .await
}

/// Changes an endpoint's URL, events, description and threshold (the secret stays).
pub async fn update(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    endpoint_id: Uuid,
    url: &str,
    input: &EndpointInput,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let sql = format!(
        "UPDATE webhook_endpoint SET url = $3, description = $4, events = $5, credits_low_threshold = $6
         WHERE endpoint_id = $1 AND user_id = $2 RETURNING {ENDPOINT_COLUMNS}"
    );
    let events: Vec<&str> = input.events.iter().map(|e| e.as_str()).collect();
    sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(sql))
        .bind(endpoint_id)
        .bind(user_id)
        .bind(url)
        .bind(input.description.trim())
        .bind(&events)
        .bind(input.credits_low_threshold)
        .fetch_optional(db)
        .await
}

/// A user's endpoints, oldest first.
pub async fn list(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Vec<Endpoint>, sqlx::Error> {
    let sql =
        format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoint WHERE user_id = $1 ORDER BY created_at, endpoint_id");
    sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_all(db).await
}

/// An endpoint of `user_id` (`None` also for other users' endpoints).
pub async fn find(db: impl PgExecutor<'_>, user_id: Uuid, endpoint_id: Uuid) -> Result<Option<Endpoint>, sqlx::Error> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoint WHERE endpoint_id = $1 AND user_id = $2");
    sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(sql)).bind(endpoint_id).bind(user_id).fetch_optional(db).await
}

/// Deletes an endpoint and its deliveries; `false` when the user has no such endpoint.
pub async fn delete(db: impl PgExecutor<'_>, user_id: Uuid, endpoint_id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM webhook_endpoint WHERE endpoint_id = $1 AND user_id = $2")
        .bind(endpoint_id)
        .bind(user_id)
        .execute(db)
        .await?
        .rows_affected()
        == 1)
}

/// Rotates an endpoint's secret: a new one signs from now on, and the current one keeps signing
/// too (a second `v1=`) for `overlap`, so receivers can switch without missing a delivery.
/// Returns the endpoint with its new secret.
pub async fn rotate_secret(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    endpoint_id: Uuid,
    overlap: time::Duration,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let sql = format!(
        "UPDATE webhook_endpoint
         SET previous_secret = CASE WHEN $4 > 0 THEN secret END,
             previous_secret_expires_at = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4) END,
             secret = $3
         WHERE endpoint_id = $1 AND user_id = $2 RETURNING {ENDPOINT_COLUMNS}"
    );
    sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(sql))
        .bind(endpoint_id)
        .bind(user_id)
        .bind(new_secret())
        .bind(overlap.as_seconds_f64())
        .fetch_optional(db)
        .await
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet: the next attempt is due at `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// Every attempt of the day failed.
    Failed,
}

/// A delivery as its owner sees it.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: OffsetDateTime,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub replay_of: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
}

const DELIVERY_SELECT: &str = "SELECT d.delivery_id, d.endpoint_id, d.event_id, e.type AS event_type, d.status,
        d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.last_attempt_at, d.replay_of,
        d.created_at, d.completed_at
    FROM webhook_delivery d JOIN webhook_event e USING (event_id)";

/// A page of an endpoint's deliveries, newest first, after (`created_at`, `delivery_id`).
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    endpoint_id: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let sql = format!(
        "{DELIVERY_SELECT} WHERE d.endpoint_id = $1 AND ($2::timestamptz IS NULL OR (d.created_at, d.delivery_id) < ($2, $3))
         ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT $4"
    );
    let (at, id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
    sqlx::query_as::<_, DeliveryRow>(sqlx::AssertSqlSafe(sql))
        .bind(endpoint_id)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// One delivery of an endpoint of `user_id`.
pub async fn find_delivery(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    endpoint_id: Uuid,
    delivery_id: Uuid,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    let sql = format!(
        "{DELIVERY_SELECT} JOIN webhook_endpoint p ON p.endpoint_id = d.endpoint_id
         WHERE d.delivery_id = $1 AND d.endpoint_id = $2 AND p.user_id = $3"
    );
    sqlx::query_as::<_, DeliveryRow>(sqlx::AssertSqlSafe(sql))
        .bind(delivery_id)
        .bind(endpoint_id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

/// One attempt of a delivery.
#[derive(Debug, Clone, FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub started_at: OffsetDateTime,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

pub async fn attempts(db: impl PgExecutor<'_>, delivery_id: Uuid) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attempt, started_at, duration_ms, status_code, error, response_excerpt FROM webhook_attempt
         WHERE delivery_id = $1 ORDER BY attempt",
    )
    .bind(delivery_id)
    .fetch_all(db)
    .await
}

/// Replays a delivery: a new delivery of the same event (the same body) to the same endpoint,
/// due now. Returns its id (`None`: no such delivery of this user's endpoint).
pub async fn replay(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    endpoint_id: Uuid,
    delivery_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH original AS (
             SELECT d.delivery_id, d.event_id, d.endpoint_id FROM webhook_delivery d
             JOIN webhook_endpoint p ON p.endpoint_id = d.endpoint_id
             WHERE d.delivery_id = $2 AND d.endpoint_id = $3 AND p.user_id = $4
         ), queued AS (
             SELECT pg_notify($5, '')
         )
         INSERT INTO webhook_delivery (delivery_id, event_id, endpoint_id, replay_of)
         SELECT $1, event_id, endpoint_id, delivery_id FROM original, queued
         RETURNING delivery_id",
    )
    .bind(Uuid::now_v7())
    .bind(delivery_id)
    .bind(endpoint_id)
    .bind(user_id)
    .bind(outbox::CHANNEL)
    .fetch_optional(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_secrets() {
        assert_eq!(EventType::parse("run.completed"), Some(EventType::RunCompleted));
        assert_eq!(EventType::parse("run.done"), None);
        let mut errors = InputErrors::default();
        let events = parse_events(&["job.failed".into(), "job.failed".into(), "nope".into()], &mut errors);
        assert_eq!(events, vec![EventType::JobFailed]);
        assert!(errors.get("events").is_some_and(|m| m.contains("nope")));
        let secret = new_secret();
        assert!(secret.starts_with("whsec_") && secret.len() == 6 + 43, "{secret}");
        assert_ne!(new_secret(), secret);
    }
}
