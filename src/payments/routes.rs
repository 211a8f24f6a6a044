//! The payments routes: the `/credits` pages ([`super::pages`]) and `POST /webhooks/stripe`,
//! which answers Stripe in JSON (`{"received": true, "outcome": …}` or an error code).

use axum::{
    Json,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;

use super::webhook::{self, WebhookError};
use crate::{state::AppState, web::Routes};

/// The largest webhook body accepted (Stripe's events are a few KB).
pub const WEBHOOK_BODY_LIMIT: usize = 512 * 1024;

pub fn routes() -> Routes<AppState> {
    super::pages::routes()
        .route("/webhooks/stripe", post(stripe_webhook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)))
}

async fn stripe_webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    match webhook::verify_and_handle(&state.pool, state.payments.webhook_secret.expose(), signature, &body).await {
        Ok(outcome) => (StatusCode::OK, Json(json!({"received": true, "outcome": outcome.as_str()}))).into_response(),
        Err(err) if err.is_client_error() => {
            tracing::warn!("rejected webhook: {err}");
            metrics::counter!("stripe_webhook_events_total", "outcome" => "rejected").increment(1);
            let code = if matches!(err, WebhookError::Signature(_)) { "invalid_signature" } else { "invalid_event" };
            (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": code, "message": err.to_string()}})))
                .into_response()
        }
        Err(err) => {
            // Stripe retries on 5xx, which is what we want for a database hiccup.
            tracing::error!(error = ?err, "webhook handling failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(
                    json!({"error": {"code": "internal", "message": "the event could not be processed; retry later"}}),
                ),
            )
                .into_response()
        }
    }
}
