//! Stripe's signed events (received at `POST /webhooks/stripe`, see `payments::routes`). The signature is checked on the raw body
//! (`Stripe-Signature: t=…,v1=…`, HMAC-SHA256 over `"{t}.{body}"`, any matching `v1`, constant
//! time, at most [`TOLERANCE_SECS`] old) before anything is parsed. Each event id is recorded once,
//! in the same transaction that acts on it, so redeliveries change nothing.
//!
//! The sandbox checkout builds and signs the same events ([`sandbox_event`]) and hands them to
//! [`verify_and_handle`], so both providers fulfil payments through one code path.

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use crate::payments::{self, Fulfilment, Payment, SessionObject};

/// How old (or how far in the future) a signature's timestamp may be.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("signature timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The `Stripe-Signature` header value for `body` signed at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(signature(secret, timestamp, body).finalize().into_bytes()))
}

fn signature(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a `Stripe-Signature` header against `body` at time `now` (Unix seconds).
pub fn verify(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match key {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => candidates.push(value),
            _ => {} // v0 and future schemes are ignored, as Stripe's libraries do.
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let mac = signature(secret, timestamp, body);
    let matches = candidates
        .iter()
        .filter_map(|candidate| hex::decode(candidate).ok())
        .any(|bytes| mac.clone().verify_slice(&bytes).is_ok());
    if matches { Ok(()) } else { Err(SignatureError::Mismatch) }
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// What happened to a verified event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This event id was handled before; nothing changed.
    Duplicate,
    Fulfilment(Fulfilment),
    /// The payment was marked failed (or was no longer pending).
    MarkedFailed {
        changed: bool,
    },
    /// A completed session whose payment is still processing (asynchronous methods).
    AwaitingPayment,
    /// An event type this app does not act on.
    Ignored,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Duplicate => "duplicate",
            Outcome::Fulfilment(f) => f.outcome(),
            Outcome::MarkedFailed { changed: true } => "marked_failed",
            Outcome::MarkedFailed { changed: false } => "not_pending",
            Outcome::AwaitingPayment => "awaiting_payment",
            Outcome::Ignored => "ignored",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("invalid event: {0}")]
    Payload(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl WebhookError {
    pub fn is_client_error(&self) -> bool {
        matches!(self, WebhookError::Signature(_) | WebhookError::Payload(_))
    }
}

/// Verifies an event's signature and acts on it. Used by the webhook route and the sandbox.
pub async fn verify_and_handle(
    pool: &PgPool,
    secret: &str,
    signature_header: Option<&str>,
    body: &[u8],
) -> Result<Outcome, WebhookError> {
    verify(secret, signature_header, body, time::OffsetDateTime::now_utc().unix_timestamp())?;
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| WebhookError::Payload(err.to_string()))?;
    // Text PostgreSQL cannot store is refused before anything is recorded.
    if has_nul(&value) {
        return Err(WebhookError::Payload("the event contains NUL characters".into()));
    }
    let event: Event = serde_json::from_value(value).map_err(|err| WebhookError::Payload(err.to_string()))?;
    handle(pool, event).await
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

async fn handle(pool: &PgPool, event: Event) -> Result<Outcome, WebhookError> {
    let is_session_event = event.kind.starts_with("checkout.session.");
    let session: Option<SessionObject> = if is_session_event {
        Some(serde_json::from_value(event.data.object).map_err(|err| WebhookError::Payload(err.to_string()))?)
    } else {
        None
    };
    let mut tx = crate::db::begin(pool).await?;
    // Recording the id first makes a concurrent redelivery wait here, then see the id taken.
    let fresh: Option<String> = sqlx::query_scalar(
        "INSERT INTO stripe_event (event_id, event_type, checkout_session_id, outcome) VALUES ($1, $2, $3, 'received')
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(session.as_ref().map(|s| s.id.as_str()))
    .fetch_optional(&mut *tx)
    .await?;
    if fresh.is_none() {
        tx.rollback().await?;
        return Ok(Outcome::Duplicate);
    }
    let payment_id = session.as_ref().and_then(payments::session_payment_id);
    let outcome = match (event.kind.as_str(), &session) {
        ("checkout.session.completed" | "checkout.session.async_payment_succeeded", Some(session)) => {
            if session.payment_status == "paid" {
                Outcome::Fulfilment(payments::fulfil(&mut tx, session).await?)
            } else {
                Outcome::AwaitingPayment
            }
        }
        ("checkout.session.async_payment_failed" | "checkout.session.expired", Some(session)) => {
            let reason = if event.kind.ends_with("expired") {
                "the checkout expired before it was paid"
            } else {
                "the payment did not go through"
            };
            match payment_id {
                Some(id) => {
                    Outcome::MarkedFailed { changed: mark_failed_if_session(&mut tx, id, &session.id, reason).await? }
                }
                None => Outcome::Ignored,
            }
        }
        _ => Outcome::Ignored,
    };
    let known_payment: Option<Uuid> = match payment_id {
        Some(id) => {
            sqlx::query_scalar("SELECT payment_id FROM payment WHERE payment_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }
        None => None,
    };
    sqlx::query("UPDATE stripe_event SET outcome = $2, payment_id = $3 WHERE event_id = $1")
        .bind(&event.id)
        .bind(outcome.as_str())
        .bind(known_payment)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(event_id = %event.id, kind = %event.kind, outcome = outcome.as_str(), "stripe event");
    metrics::counter!("stripe_webhook_events_total", "outcome" => outcome.as_str()).increment(1);
    Ok(outcome)
}

async fn mark_failed_if_session(
    tx: &mut sqlx::PgConnection,
    payment_id: Uuid,
    session_id: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let Some(payment) = payments::get_payment(&mut *tx, payment_id).await? else {
        return Ok(false);
    };
    if payment.checkout_session_id.as_deref().is_some_and(|own| own != session_id) {
        return Ok(false);
    }
    payments::mark_failed(&mut *tx, payment_id, reason).await
}

/// A `checkout.session.completed` (paid) event for a sandbox payment, as Stripe would send it,
/// with its `Stripe-Signature` header value.
pub fn sandbox_event(secret: &str, payment: &Payment, session_id: &str) -> (Vec<u8>, String) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = json!({
        "id": format!("evt_sandbox_{}", Uuid::now_v7().simple()),
        "object": "event",
        "type": "checkout.session.completed",
        "created": now,
        "livemode": false,
        "data": {"object": {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "complete",
            "payment_status": "paid",
            "client_reference_id": payment.payment_id.to_string(),
            "amount_total": payment.amount_cents,
            "currency": payment.currency,
            "metadata": {
                "payment_id": payment.payment_id.to_string(),
                "user_id": payment.user_id.to_string(),
                "pack": payment.pack_slug,
            },
        }},
    });
    let bytes = body.to_string().into_bytes();
    let header = sign(secret, now, &bytes);
    (bytes, header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"ping","data":{"object":{}}}"#;

    #[test]
    fn a_signed_body_verifies() {
        let header = sign(SECRET, 1_000, BODY);
        assert_eq!(verify(SECRET, Some(&header), BODY, 1_000), Ok(()));
        assert_eq!(verify(SECRET, Some(&header), BODY, 1_300), Ok(()));
        assert_eq!(verify(SECRET, Some(&header), BODY, 700), Ok(()));
    }

    #[test]
    fn rejects_what_it_should() {
        let header = sign(SECRET, 1_000, BODY);
        assert_eq!(verify(SECRET, Some(&header), BODY, 1_301), Err(SignatureError::Stale));
        assert_eq!(verify("whsec_other", Some(&header), BODY, 1_000), Err(SignatureError::Mismatch));
        assert_eq!(verify(SECRET, Some(&header), b"{}", 1_000), Err(SignatureError::Mismatch));
        assert_eq!(verify(SECRET, None, BODY, 1_000), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, Some("garbage"), BODY, 1_000), Err(SignatureError::Malformed));
        assert_eq!(verify(SECRET, Some("t=1000"), BODY, 1_000), Err(SignatureError::Malformed));
        assert_eq!(verify(SECRET, Some("t=abc,v1=00"), BODY, 1_000), Err(SignatureError::Malformed));
        assert_eq!(verify(SECRET, Some("t=1000,v1=zz"), BODY, 1_000), Err(SignatureError::Mismatch));
    }

    #[test]
    fn any_matching_v1_is_accepted() {
        let good = sign(SECRET, 1_000, BODY);
        let other = sign("whsec_old", 1_000, BODY);
        let v1_good = good.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        let v1_other = other.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        let header = format!("t=1000,v1={v1_other},v0=abc,v1={v1_good}");
        assert_eq!(verify(SECRET, Some(&header), BODY, 1_000), Ok(()));
        let header = format!("t=1000,v1={v1_other}");
        assert_eq!(verify(SECRET, Some(&header), BODY, 1_000), Err(SignatureError::Mismatch));
    }
}
