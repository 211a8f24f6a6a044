//! Google's Gemini API with image output ("Nano Banana"; `providers-more.md` §2), synchronous.
//!
//! - `POST {base}v1beta/models/{model}:generateContent` with `x-goog-api-key`; the prompt (and a
//!   reference image as `inlineData`) in `contents`, `generationConfig.responseModalities`
//!   `["TEXT","IMAGE"]` and `imageConfig {aspectRatio, imageSize}` (`2K`/`4K`, capital K).
//! - Like OpenAI, the call is the whole generation: `submit` records a local task, the first poll
//!   calls.
//! - Safety outcomes arrive as **HTTP 200**: `promptFeedback.blockReason` (no candidates), or a
//!   candidate with `finishReason` `IMAGE_SAFETY`, `IMAGE_PROHIBITED_CONTENT`, `SAFETY`, … and no
//!   image. `NO_IMAGE`, `OTHER` and a text-only answer are failures, not moderation.
//! - The image is the last non-thought `inlineData` part; `usageMetadata` (image output tokens
//!   and prompt tokens) priced per model ([`usage_usd`]) is its reported cost.
//! - Errors are `google.rpc.Status`: 429 `RESOURCE_EXHAUSTED` waits for `Retry-After`, a
//!   `RetryInfo.retryDelay` or the message's "Please retry in 28.0s"; 500/502/503/504 are
//!   transient; 400 (including `API_KEY_INVALID`), 403 and 404 (retired models) are fatal.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

use super::{
    GenerationRequest, Image, Mode, Poll, Provider, ProviderError, Submission,
    http::{self, MAX_JSON_BYTES},
};
use crate::config::Secret;

const WHO: &str = "google";

/// Finish and block reasons that mean the safety filter refused.
const SAFETY: &[&str] = &[
    "SAFETY",
    "IMAGE_SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
    "JAILBREAK",
];

pub struct GoogleProvider {
    client: reqwest::Client,
    key: Secret,
    base: Url,
}

impl std::fmt::Debug for GoogleProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GoogleProvider({})", self.base)
    }
}

impl GoogleProvider {
    pub fn new(key: Secret, base: Url) -> anyhow::Result<Self> {
        Self::with_timeout(key, base, Duration::from_secs(180))
    }

    pub fn with_timeout(key: Secret, base: Url, timeout: Duration) -> anyhow::Result<Self> {
        Ok(GoogleProvider { client: http::client(timeout)?, key, base })
    }

    /// The request body.
    pub fn body(request: &GenerationRequest) -> Value {
        let mut parts = vec![json!({"text": request.prompt})];
        if let Some(reference) = &request.reference_image {
            let uri = http::data_uri(reference);
            let (mime, data) =
                uri.strip_prefix("data:").and_then(|r| r.split_once(";base64,")).unwrap_or(("image/jpeg", ""));
            parts.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
        }
        let size = match request.mode {
            Mode::TwoK => "2K",
            Mode::FourK => "4K",
        };
        json!({
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": request.aspect_ratio, "imageSize": size}
            }
        })
    }

    fn url(&self, path: &str) -> Result<Url, ProviderError> {
        self.base.join(path).map_err(|e| ProviderError::Fatal(format!("{WHO}: {e}")))
    }

    async fn call(&self, request: &GenerationRequest) -> Result<Poll, ProviderError> {
        let url = self.url(&format!("v1beta/models/{}:generateContent", request.endpoint))?;
        let response = self
            .client
            .post(url)
            .header("x-goog-api-key", self.key.expose())
            .json(&Self::body(request))
            .send()
            .await
            .map_err(|e| http::transient(WHO, "generating", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = http::read_capped(response, MAX_JSON_BYTES, WHO, "response").await?;
        if !status.is_success() {
            return Err(error(status, &headers, &body));
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Transient(format!("{WHO}: unexpected response: {e}")))?;
        outcome(&request.endpoint, &value)
    }

    /// One cheap authenticated call: `GET {base}v1beta/models?pageSize=1`.
    pub async fn check(&self) -> Result<String, ProviderError> {
        let mut url = self.url("v1beta/models")?;
        url.query_pairs_mut().append_pair("pageSize", "50");
        let response = self
            .client
            .get(url)
            .header("x-goog-api-key", self.key.expose())
            .send()
            .await
            .map_err(|e| http::transient(WHO, "listing models", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = http::read_capped(response, MAX_JSON_BYTES, WHO, "response").await?;
        if !status.is_success() {
            return Err(error(status, &headers, &body));
        }
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let image_models = value["models"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["name"].as_str().is_some_and(|n| n.contains("image"))).count())
            .unwrap_or(0);
        Ok(format!("key accepted; {image_models} image models listed"))
    }
}

/// What a 200 answer means.
fn outcome(endpoint: &str, value: &Value) -> Result<Poll, ProviderError> {
    if let Some(block) = value["promptFeedback"]["blockReason"].as_str() {
        return Ok(Poll::Moderated { reason: format!("Google's safety filter blocked the prompt ({block})") });
    }
    let Some(candidate) = value["candidates"].as_array().and_then(|c| c.first()) else {
        return Err(ProviderError::Fatal(format!("{WHO}: the response has no candidates")));
    };
    let finish = candidate["finishReason"].as_str().unwrap_or("");
    let message = candidate["finishMessage"].as_str().map(|m| format!(": {}", m.chars().take(200).collect::<String>()));
    let image = candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !p["thought"].as_bool().unwrap_or(false))
        .filter_map(|p| p["inlineData"]["data"].as_str().or_else(|| p["inline_data"]["data"].as_str()))
        .next_back();
    match image {
        Some(data) => {
            let mut image: Image = http::image_from_base64(data, WHO)?;
            image.usage_usd = usage_usd(endpoint, &value["usageMetadata"]);
            Ok(Poll::Ready(image))
        }
        None if SAFETY.contains(&finish) => Ok(Poll::Moderated {
            reason: format!("Google's safety filter blocked the image ({finish}){}", message.unwrap_or_default()),
        }),
        None => {
            let why = match finish {
                "NO_IMAGE" => "the model returned no image (NO_IMAGE)".to_string(),
                "" | "STOP" => "the model answered with text only, without an image".to_string(),
                other => format!("the model returned no image ({other})"),
            };
            Ok(Poll::Failed { reason: format!("{why}{}", message.unwrap_or_default()) })
        }
    }
}

/// US dollars per million tokens (prompt in, image out): 3.1 Flash Image $60/M image output,
/// 3 Pro Image $120/M [T, the arithmetic matches Google's token counts]; input at $0.50 / $2 [U].
fn rates(endpoint: &str) -> (f64, f64) {
    if endpoint.contains("pro") { (2.0, 120.0) } else { (0.5, 60.0) }
}

/// The cost of `usageMetadata`: image output tokens (from `candidatesTokensDetails`, else all
/// candidate tokens) and prompt tokens.
pub fn usage_usd(endpoint: &str, usage: &Value) -> Option<f64> {
    if !usage.is_object() {
        return None;
    }
    let (input_rate, output_rate) = rates(endpoint);
    let prompt = usage["promptTokenCount"].as_u64().unwrap_or(0);
    let image_tokens = usage["candidatesTokensDetails"]
        .as_array()
        .map(|d| d.iter().filter(|x| x["modality"] == "IMAGE").filter_map(|x| x["tokenCount"].as_u64()).sum())
        .or_else(|| usage["candidatesTokenCount"].as_u64())
        .unwrap_or(0);
    Some((prompt as f64 * input_rate + image_tokens as f64 * output_rate) / 1e6)
}

/// "Please retry in 28.0s." or a `RetryInfo` detail's `retryDelay: "28s"`.
fn retry_hint(error: &Value) -> Option<Duration> {
    let from_details = error["details"].as_array().into_iter().flatten().find_map(|d| {
        let delay = d["retryDelay"].as_str()?;
        delay.trim_end_matches('s').parse::<f64>().ok()
    });
    let from_message = || {
        let message = error["message"].as_str()?;
        let rest = &message[message.find("retry in ")? + "retry in ".len()..];
        let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        number.parse::<f64>().ok()
    };
    let secs = from_details.or_else(from_message)?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(http::MAX_RETRY_AFTER))
}

fn error(status: StatusCode, headers: &reqwest::header::HeaderMap, body: &[u8]) -> ProviderError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = &value["error"];
    let state = err["status"].as_str().unwrap_or("");
    let message = err["message"].as_str().unwrap_or("");
    let detail = if state.is_empty() { message.to_string() } else { format!("{state}: {message}") };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = http::retry_after(headers).or_else(|| retry_hint(err));
        return ProviderError::RateLimited {
            message: format!("{WHO}: rate limited (HTTP 429){}", http::suffix(&detail)),
            retry_after,
        };
    }
    let invalid_key =
        err["details"].as_array().into_iter().flatten().any(|d| d["reason"].as_str() == Some("API_KEY_INVALID"));
    if invalid_key {
        return ProviderError::Fatal(format!("{WHO}: the API key is not valid (HTTP {status})"));
    }
    http::status_error(WHO, "the Gemini API", status, headers, &detail)
}

#[async_trait]
impl Provider for GoogleProvider {
    fn name(&self) -> &'static str {
        "google"
    }

    async fn submit(&self, _request: &GenerationRequest) -> Result<Submission, ProviderError> {
        Ok(Submission {
            task_id: format!("google-{}", uuid::Uuid::new_v4()),
            polling_url: None,
            cost: None,
            submitted_at_ms: http::now_ms(),
        })
    }

    async fn poll(&self, request: &GenerationRequest, _submission: &Submission) -> Result<Poll, ProviderError> {
        self.call(request).await
    }

    fn poll_interval(&self, _attempt: u32) -> Duration {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests;
