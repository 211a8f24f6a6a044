//! Delivering webhook events, in the background of every process (`serve` and `worker`):
//!
//! - due deliveries are claimed with `FOR UPDATE SKIP LOCKED`, which also pushes their due time
//!   past a lease (a process that dies mid-send leaves the delivery to be picked up again);
//! - each is POSTed as JSON with `Faceoff-Signature: t=<unix seconds>,v1=<hex>`, where the hex
//!   is HMAC-SHA256 keyed with the endpoint's secret over `"{t}.{body}"` — Stripe's scheme;
//!   during a rotation's overlap the old secret signs too (a second `v1=`);
//! - the client follows no redirect, uses no proxy, gives up after `timeout`, reads at most
//!   [`MAX_EXCERPT`] bytes of the answer, and (unless private addresses are allowed) resolves
//!   names through [`ssrf::PublicOnly`], so it never connects to an internal address;
//! - a 2xx answer succeeds; anything else (another status, a timeout, a refused address) is
//!   retried after [`next_delay`]: 30 s, 1 min, 2 min … doubling up to 6 h, for [`RETRY_WINDOW`]
//!   (a day) after the event; then the delivery has failed. Every attempt is recorded with its
//!   status code or error.
//!
//! The clock is injected ([`Deliverer::run_due`] takes `now`): tests walk the backoff schedule
//! without waiting.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::{FromRow, PgPool};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    CreditsLowData, CreditsLowEvent, DeliveryStatus, Endpoint, EventType, JobFailedData, JobFailedEvent,
    RunCompletedData, RunCompletedEvent, SIGNATURE_HEADER, outbox, ssrf,
};
use crate::{config::WebhookSettings, runs};

/// How long after its event a delivery is retried.
pub const RETRY_WINDOW: time::Duration = time::Duration::hours(24);
/// The first retry's delay; each next one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(30);
pub const MAX_DELAY: Duration = Duration::from_secs(6 * 3600);
/// How much of an answer is read and kept.
pub const MAX_EXCERPT: usize = 1024;
/// Deliveries claimed at once by one process.
const BATCH: i64 = 32;
/// Deliveries sent at once by one process.
const PARALLEL: usize = 8;

/// The wait after failed attempt number `attempt` (1-based): 30 s × 2^(attempt−1), at most 6 h.
pub fn next_delay(attempt: i32) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(20);
    FIRST_DELAY.saturating_mul(1u32 << doublings).min(MAX_DELAY)
}

/// The `Faceoff-Signature` header for `body` sent at `timestamp`, signed with each of `secrets`.
pub fn signature_header(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

#[derive(Debug, Clone, FromRow)]
struct Claimed {
    delivery_id: Uuid,
    event_id: Uuid,
    endpoint_id: Uuid,
    attempts: i32,
    created_at: OffsetDateTime,
}

#[derive(Debug, Clone, FromRow)]
struct EventRow {
    event_id: Uuid,
    #[sqlx(rename = "type")]
    kind: String,
    run_id: Option<Uuid>,
    job_id: Option<Uuid>,
    available: Option<i64>,
    created_at: OffsetDateTime,
}

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub excerpt: Option<String>,
}

impl AttemptOutcome {
    fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends due deliveries (see the module docs).
#[derive(Clone)]
pub struct Deliverer {
    pool: PgPool,
    client: reqwest::Client,
    settings: WebhookSettings,
}

impl Deliverer {
    pub fn new(pool: PgPool, settings: WebhookSettings) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .user_agent("Faceoff-Webhooks/1.0");
        if !settings.allow_private {
            builder = builder.dns_resolver(ssrf::PublicOnly);
        }
        Ok(Deliverer { pool, client: builder.build()?, settings })
    }

    /// Claims the deliveries due at `now` (at most a batch) and attempts each; returns how many.
    pub async fn run_due(&self, now: OffsetDateTime) -> Result<usize, sqlx::Error> {
        let lease = self.settings.timeout + Duration::from_secs(60);
        let claimed: Vec<Claimed> = sqlx::query_as(
            "WITH due AS (
                 SELECT delivery_id FROM webhook_delivery
                 WHERE status = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, delivery_id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE webhook_delivery d
             SET attempts = d.attempts + 1, next_attempt_at = $1 + make_interval(secs => $3)
             FROM due WHERE d.delivery_id = due.delivery_id
             RETURNING d.delivery_id, d.event_id, d.endpoint_id, d.attempts, d.created_at",
        )
        .bind(now)
        .bind(BATCH)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let count = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(PARALLEL, |delivery| async move {
                if let Err(err) = self.attempt(&delivery, now).await {
                    tracing::warn!(delivery = %delivery.delivery_id, "webhook delivery: {err}");
                }
            })
            .await;
        Ok(count)
    }

    async fn attempt(&self, delivery: &Claimed, now: OffsetDateTime) -> Result<(), sqlx::Error> {
        let endpoint: Option<Endpoint> = sqlx::query_as(
            "SELECT endpoint_id, user_id, url, description, events, credits_low_threshold, secret, previous_secret,
                    previous_secret_expires_at, created_at
             FROM webhook_endpoint WHERE endpoint_id = $1",
        )
        .bind(delivery.endpoint_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(endpoint) = endpoint else { return Ok(()) }; // deleted meanwhile (deliveries cascade)
        let started = std::time::Instant::now();
        let outcome = match self.payload(delivery.event_id).await? {
            Some(body) => self.send(&endpoint, delivery, &body, now).await,
            None => AttemptOutcome {
                status_code: None,
                error: Some("the event's run no longer exists".into()),
                excerpt: None,
            },
        };
        let elapsed = started.elapsed();
        self.record(delivery, &outcome, now, elapsed).await
    }

    /// The event's body: rendered and stored at its first attempt, the same bytes ever after.
    async fn payload(&self, event_id: Uuid) -> Result<Option<String>, sqlx::Error> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT payload::text FROM webhook_event WHERE event_id = $1 AND payload IS NOT NULL")
                .bind(event_id)
                .fetch_optional(&self.pool)
                .await?;
        if stored.is_some() {
            return Ok(stored);
        }
        let event: Option<EventRow> = sqlx::query_as(
            "SELECT event_id, type, run_id, job_id, available, created_at FROM webhook_event WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(event) = event else { return Ok(None) };
        let Some(payload) = self.render(&event).await? else { return Ok(None) };
        sqlx::query_scalar(
            "UPDATE webhook_event SET payload = COALESCE(payload, $2) WHERE event_id = $1 RETURNING payload::text",
        )
        .bind(event_id)
        .bind(&payload)
        .fetch_optional(&self.pool)
        .await
    }

    /// The event's body (the `…Event` schemas of the OpenAPI document's `webhooks`).
    async fn render(&self, event: &EventRow) -> Result<Option<serde_json::Value>, sqlx::Error> {
        let (id, created_at) = (event.event_id, super::rfc3339(event.created_at));
        let value = match EventType::parse(&event.kind) {
            Some(kind @ EventType::RunCompleted) => {
                let Some(run) = runs::find(&self.pool, event.run_id.unwrap_or_default()).await? else {
                    return Ok(None);
                };
                let run = runs::RunView::load(&self.pool, &run).await?;
                serde_json::to_value(RunCompletedEvent { id, kind, created_at, data: RunCompletedData { run } })
            }
            Some(kind @ EventType::JobFailed) => {
                let run_id = event.run_id.unwrap_or_default();
                let jobs = crate::jobs::for_run(&self.pool, run_id).await?;
                let Some(job) = jobs.iter().find(|j| Some(j.job_id) == event.job_id) else { return Ok(None) };
                let job = runs::JobView::from_job(job);
                serde_json::to_value(JobFailedEvent { id, kind, created_at, data: JobFailedData { run_id, job } })
            }
            Some(kind @ EventType::CreditsLow) => {
                let data = CreditsLowData { available: event.available.unwrap_or(0) };
                serde_json::to_value(CreditsLowEvent { id, kind, created_at, data })
            }
            None => return Ok(None),
        };
        Ok(value.ok())
    }

    async fn send(&self, endpoint: &Endpoint, delivery: &Claimed, body: &str, now: OffsetDateTime) -> AttemptOutcome {
        let refused = |error: String| AttemptOutcome { status_code: None, error: Some(error), excerpt: None };
        // IP literals and internal names are checked here (the resolver checks the rest).
        if let Err(problem) = ssrf::check_shape(&endpoint.url, self.settings.allow_private) {
            return refused(format!("refused: {problem}"));
        }
        let timestamp = now.unix_timestamp();
        let signature = signature_header(&endpoint.signing_secrets(now), timestamp, body.as_bytes());
        let event_type = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default();
        let sent = self
            .client
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header("Faceoff-Event-Type", event_type)
            .header("Faceoff-Delivery-Id", delivery.delivery_id.to_string())
            .header("Faceoff-Delivery-Attempt", delivery.attempts.to_string())
            .body(body.to_string())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => return refused(describe(&err)),
        };
        let status = response.status().as_u16();
        let mut excerpt = Vec::new();
        let mut error = None;
        while excerpt.len() < MAX_EXCERPT {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk[..chunk.len().min(MAX_EXCERPT - excerpt.len())]),
                Ok(None) => break,
                Err(err) => {
                    error = Some(describe(&err));
                    break;
                }
            }
        }
        let excerpt = String::from_utf8_lossy(&excerpt).replace('\0', "").trim().to_string();
        AttemptOutcome { status_code: Some(status), error, excerpt: (!excerpt.is_empty()).then_some(excerpt) }
    }

    async fn record(
        &self,
        delivery: &Claimed,
        outcome: &AttemptOutcome,
        now: OffsetDateTime,
        elapsed: Duration,
    ) -> Result<(), sqlx::Error> {
        let (status, next) = if outcome.succeeded() {
            (DeliveryStatus::Succeeded, now)
        } else {
            let next = now + next_delay(delivery.attempts);
            if next > delivery.created_at + RETRY_WINDOW {
                (DeliveryStatus::Failed, now)
            } else {
                (DeliveryStatus::Pending, next)
            }
        };
        let error = match (&outcome.error, outcome.status_code) {
            (Some(error), _) => Some(error.clone()),
            (None, Some(code)) if !outcome.succeeded() => Some(format!("the endpoint answered {code}")),
            _ => None,
        };
        let mut tx = crate::db::begin(&self.pool).await?;
        sqlx::query(
            "INSERT INTO webhook_attempt (delivery_id, attempt, started_at, duration_ms, status_code, error, response_excerpt)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(delivery.delivery_id)
        .bind(delivery.attempts)
        .bind(now)
        .bind(i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX))
        .bind(outcome.status_code.map(i32::from))
        .bind(&error)
        .bind(&outcome.excerpt)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_delivery
             SET status = $2, next_attempt_at = $3, last_status_code = $4, last_error = $5, last_attempt_at = $6,
                 completed_at = CASE WHEN $2 = 'pending' THEN NULL ELSE $6 END
             WHERE delivery_id = $1",
        )
        .bind(delivery.delivery_id)
        .bind(status)
        .bind(next)
        .bind(outcome.status_code.map(i32::from))
        .bind(&error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let outcome_label = match status {
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Pending => "retrying",
            DeliveryStatus::Failed => "failed",
        };
        metrics::counter!("webhook_attempts_total", "outcome" => outcome_label).increment(1);
        Ok(())
    }

    /// The background task: delivers whatever is due, woken by [`outbox::CHANNEL`] or every
    /// `poll`, until `shutdown` (a send in flight finishes: it is bounded by the timeout).
    pub fn spawn(self, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let wake = Arc::new(Notify::new());
        let (pool, listener_wake, listener_shutdown) = (self.pool.clone(), wake.clone(), shutdown.clone());
        let listener = tokio::spawn(async move {
            crate::db::listen(&pool, outbox::CHANNEL, "webhook listener", &listener_shutdown, |_| {
                listener_wake.notify_one();
                async {}
            })
            .await;
        });
        let poll = self.settings.poll;
        let worker = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
                loop {
                    match self.run_due(OffsetDateTime::now_utc()).await {
                        Ok(n) if n as i64 >= BATCH && !shutdown.is_cancelled() => continue,
                        Ok(_) => break,
                        Err(err) => {
                            tracing::warn!("webhook deliveries: {err}");
                            break;
                        }
                    }
                }
            }
        });
        vec![listener, worker]
    }
}

/// An HTTP client error in words (reqwest hides the cause of a refused address in `source`).
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".into();
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_30_seconds_up_to_6_hours_for_a_day() {
        let delays: Vec<u64> = (1..=12).map(|n| next_delay(n).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600]);
        assert_eq!(next_delay(0).as_secs(), 30);
        assert_eq!(next_delay(i32::MAX).as_secs(), 21600);
    }

    #[test]
    fn signatures_are_stripes_scheme() {
        let header = signature_header(&["whsec_a", "whsec_b"], 1_700_000_000, b"{\"x\":1}");
        let parts: Vec<&str> = header.split(',').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "t=1700000000");
        assert!(parts[1].starts_with("v1=") && parts[1].len() == 3 + 64);
        // The scheme `payments::webhook` verifies for Stripe's own events accepts either secret.
        let verify = |secret| crate::payments::webhook::verify(secret, Some(&header), b"{\"x\":1}", 1_700_000_100);
        assert_eq!(verify("whsec_a"), Ok(()));
        assert_eq!(verify("whsec_b"), Ok(()));
        assert!(verify("whsec_c").is_err());
    }
}
