//! Checkout providers behind one trait: [`Stripe`] (Checkout Sessions over Stripe's HTTP API)
//! when `STRIPE_SECRET_KEY` is set, and the embedded [`Sandbox`] otherwise, whose checkout is a
//! local test-mode page that completes payments through the same signed-webhook path.

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use crate::{config::Secret, payments::Pack};

/// Which checkout a payment went through (the `payment.provider` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ProviderKind {
    Stripe,
    Sandbox,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Stripe => "stripe",
            ProviderKind::Sandbox => "sandbox",
        }
    }

    /// What buyers see.
    pub fn label(self) -> &'static str {
        match self {
            ProviderKind::Stripe => "Stripe",
            ProviderKind::Sandbox => "Sandbox (test mode)",
        }
    }
}

/// What a checkout is for, and where the buyer returns to.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub email: &'a str,
    pub pack: &'a Pack,
    pub currency: &'a str,
    /// Contains `{CHECKOUT_SESSION_ID}`, which Stripe replaces.
    pub success_url: String,
    pub cancel_url: String,
}

/// A created checkout: the provider's session id and where to send the buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// The fields of a Stripe Checkout Session object this app reads (webhook events carry the
/// same object).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SessionObject {
    pub id: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    #[serde(default)]
    pub payment_status: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the payment provider could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    #[error("the payment provider refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the payment provider sent an unexpected answer: {0}")]
    Malformed(String),
}

#[async_trait::async_trait]
pub trait CheckoutProvider: Send + Sync {
    /// Which provider this is (stored on each payment).
    fn kind(&self) -> ProviderKind;

    /// Creates the checkout for a recorded pending payment.
    async fn create_session(&self, request: &CheckoutRequest<'_>) -> Result<CheckoutSession, ProviderError>;

    /// Asks the provider for a session's current state; `None` for providers that report only
    /// through events (the sandbox).
    async fn retrieve_session(&self, session_id: &str) -> Result<Option<SessionObject>, ProviderError>;
}

/// The embedded test-mode provider: no money moves; the checkout is our own page.
pub struct Sandbox;

#[async_trait::async_trait]
impl CheckoutProvider for Sandbox {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sandbox
    }

    async fn create_session(&self, request: &CheckoutRequest<'_>) -> Result<CheckoutSession, ProviderError> {
        Ok(CheckoutSession {
            id: format!("cs_sandbox_{}", request.payment_id.simple()),
            url: format!("/credits/checkout/sandbox/{}", request.payment_id),
        })
    }

    async fn retrieve_session(&self, _session_id: &str) -> Result<Option<SessionObject>, ProviderError> {
        Ok(None)
    }
}

/// Stripe Checkout over its HTTP API (form-encoded requests, JSON answers).
pub struct Stripe {
    client: reqwest::Client,
    secret_key: Secret,
    api_url: Url,
}

impl Stripe {
    pub fn new(secret_key: Secret, api_url: Url) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("faceoff/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Stripe { client, secret_key, api_url })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.api_url.as_str().trim_end_matches('/'))
    }

    async fn answer(response: reqwest::Response) -> Result<SessionObject, ProviderError> {
        let status = response.status();
        let body = response.text().await.map_err(ProviderError::Unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(ProviderError::Rejected { status: status.as_u16(), message });
        }
        serde_json::from_str(&body).map_err(|err| ProviderError::Malformed(err.to_string()))
    }
}

/// The form fields of a Checkout Session for `request` (Stripe's bracket notation).
pub fn session_form(request: &CheckoutRequest<'_>) -> Vec<(&'static str, String)> {
    let pack = request.pack;
    vec![
        ("mode", "payment".into()),
        ("client_reference_id", request.payment_id.to_string()),
        ("customer_email", request.email.into()),
        ("success_url", request.success_url.clone()),
        ("cancel_url", request.cancel_url.clone()),
        ("line_items[0][quantity]", "1".into()),
        ("line_items[0][price_data][currency]", request.currency.into()),
        ("line_items[0][price_data][unit_amount]", pack.price_cents.to_string()),
        (
            "line_items[0][price_data][product_data][name]",
            format!("Faceoff {} pack: {} credits", pack.name, pack.credits),
        ),
        ("metadata[payment_id]", request.payment_id.to_string()),
        ("metadata[user_id]", request.user_id.to_string()),
        ("metadata[pack]", pack.slug.clone()),
        ("payment_intent_data[metadata][payment_id]", request.payment_id.to_string()),
    ]
}

#[async_trait::async_trait]
impl CheckoutProvider for Stripe {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Stripe
    }

    async fn create_session(&self, request: &CheckoutRequest<'_>) -> Result<CheckoutSession, ProviderError> {
        let response = self
            .client
            .post(self.endpoint("/v1/checkout/sessions"))
            .bearer_auth(self.secret_key.expose())
            // A retried request (ours or the network's) returns the same session.
            .header("Idempotency-Key", format!("checkout-{}", request.payment_id))
            .form(&session_form(request))
            .send()
            .await
            .map_err(ProviderError::Unreachable)?;
        let session = Self::answer(response).await?;
        let url = session.url.ok_or_else(|| ProviderError::Malformed("the session has no url".into()))?;
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(ProviderError::Malformed(format!("the session url {url:?} is not absolute")));
        }
        Ok(CheckoutSession { id: session.id, url })
    }

    async fn retrieve_session(&self, session_id: &str) -> Result<Option<SessionObject>, ProviderError> {
        // Session ids are opaque tokens; refuse anything that could change the path.
        if session_id.is_empty() || !session_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ProviderError::Malformed(format!("{session_id:?} is not a session id")));
        }
        let response = self
            .client
            .get(self.endpoint(&format!("/v1/checkout/sessions/{session_id}")))
            .bearer_auth(self.secret_key.expose())
            .send()
            .await
            .map_err(ProviderError::Unreachable)?;
        Ok(Some(Self::answer(response).await?))
    }
}
