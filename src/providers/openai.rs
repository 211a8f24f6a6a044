//! OpenAI Images API (`providers-more.md` §1): GPT Image models, synchronous.
//!
//! - `POST {base}images/generations` (JSON) or, with a reference image, `POST {base}images/edits`
//!   (multipart, the file as `image[]` with a real content type), `Authorization: Bearer`.
//!   Never `response_format` (GPT image models refuse it); results are `b64_json`.
//! - The call is the whole generation: [`Provider::submit`] only records a local task id and the
//!   first [`Provider::poll`] makes the call (a restarted worker calls again). The client allows
//!   300 s (high quality takes over two minutes).
//! - `size`: gpt-image-2 and later take any `WxH` with sides divisible by 16, ratio 1:3–3:1, up to
//!   3840×2160; older models only the three presets.
//! - Errors `{"error": {message, type, param, code}}`: 400 `moderation_blocked` (the safety system,
//!   input or output stage, `moderation_details`) is moderation; 429 `insufficient_quota` is fatal
//!   (the account is out of money), other 429s wait for `retry-after-ms`/`retry-after`; 408, 409
//!   and 5xx are transient; 401/403/404 fatal.
//! - Billing is by tokens: `usage` (text and image input tokens, image output tokens) priced per
//!   model ([`usage_usd`]) is the image's reported cost.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, multipart};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::{
    GenerationRequest, Image, Poll, Provider, ProviderError, Submission,
    http::{self, MAX_JSON_BYTES},
};
use crate::config::Secret;

const WHO: &str = "openai";
/// Where `url` results (dall-e era) may be downloaded from.
const RESULT_HOSTS: &[&str] = &["openai.com", "oaiusercontent.com", "blob.core.windows.net"];

pub struct OpenAiProvider {
    client: reqwest::Client,
    key: Secret,
    base: Url,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenAiProvider({})", self.base)
    }
}

impl OpenAiProvider {
    pub fn new(key: Secret, base: Url) -> anyhow::Result<Self> {
        Self::with_timeout(key, base, Duration::from_secs(300))
    }

    pub fn with_timeout(key: Secret, base: Url, timeout: Duration) -> anyhow::Result<Self> {
        Ok(OpenAiProvider { client: http::client(timeout)?, key, base })
    }

    /// The `size` field for `endpoint` and the request's pixel size.
    pub fn size(endpoint: &str, width: u32, height: u32) -> String {
        let (w, h) = (f64::from(width.max(16)), f64::from(height.max(16)));
        if custom_sizes(endpoint) {
            // Ratio within 1:3–3:1, at most 3840 on the long side and 3840×2160 pixels.
            let (mut w, mut h) = (w.min(h * 3.0), h.min(w * 3.0));
            let scale = (3840.0 / w.max(h)).min((3840.0 * 2160.0 / (w * h)).sqrt()).min(1.0);
            w *= scale;
            h *= scale;
            let r16 = |v: f64| ((v / 16.0).floor() as u32).max(1) * 16;
            format!("{}x{}", r16(w), r16(h))
        } else if w > h * 1.2 {
            "1536x1024".into()
        } else if h > w * 1.2 {
            "1024x1536".into()
        } else {
            "1024x1024".into()
        }
    }

    /// The JSON body of a generation.
    pub fn body(request: &GenerationRequest) -> Value {
        json!({
            "model": request.endpoint,
            "prompt": request.prompt,
            "n": 1,
            "size": Self::size(&request.endpoint, request.width, request.height),
            "quality": "high",
            "output_format": "png",
            "moderation": "auto",
        })
    }

    async fn call(&self, request: &GenerationRequest) -> Result<Image, ProviderError> {
        let builder = match &request.reference_image {
            None => self.client.post(self.url("images/generations")?).json(&Self::body(request)),
            Some(reference) => {
                let mime = match image::guess_format(reference) {
                    Ok(image::ImageFormat::Png) => "image/png",
                    Ok(image::ImageFormat::WebP) => "image/webp",
                    _ => "image/jpeg",
                };
                let ext = mime.trim_start_matches("image/");
                let part = multipart::Part::bytes(reference.to_vec())
                    .file_name(format!("reference.{ext}"))
                    .mime_str(mime)
                    .map_err(|e| ProviderError::Fatal(format!("{WHO}: {e}")))?;
                let form = multipart::Form::new()
                    .text("model", request.endpoint.clone())
                    .text("prompt", request.prompt.clone())
                    .text("n", "1")
                    .text("size", Self::size(&request.endpoint, request.width, request.height))
                    .text("quality", "high")
                    .text("output_format", "png")
                    .part("image[]", part);
                self.client.post(self.url("images/edits")?).multipart(form)
            }
        };
        let response =
            builder.bearer_auth(self.key.expose()).send().await.map_err(|e| http::transient(WHO, "generating", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = http::read_capped(response, MAX_JSON_BYTES, WHO, "response").await?;
        if !status.is_success() {
            return Err(error(status, &headers, &body));
        }
        let parsed: ImagesResponse = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Transient(format!("{WHO}: unexpected response: {e}")))?;
        let first = parsed
            .data
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Fatal(format!("{WHO}: the response has no image")))?;
        let mut image = match (first.b64_json, first.url) {
            (Some(b64), _) => http::image_from_base64(&b64, WHO)?,
            (None, Some(url)) => http::download(&self.client, &url, &self.base, RESULT_HOSTS, WHO).await?,
            (None, None) => return Err(ProviderError::Fatal(format!("{WHO}: the response has no image"))),
        };
        image.usage_usd = parsed.usage.as_ref().map(|u| usage_usd(&request.endpoint, u));
        Ok(image)
    }

    fn url(&self, path: &str) -> Result<Url, ProviderError> {
        self.base.join(path).map_err(|e| ProviderError::Fatal(format!("{WHO}: {e}")))
    }

    /// One cheap authenticated call: `GET {base}models`.
    pub async fn check(&self) -> Result<String, ProviderError> {
        let response = self
            .client
            .get(self.url("models")?)
            .bearer_auth(self.key.expose())
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
        let image_models = value
            .get("data")
            .and_then(Value::as_array)
            .map(|d| d.iter().filter(|m| m["id"].as_str().is_some_and(|id| id.starts_with("gpt-image"))).count())
            .unwrap_or(0);
        Ok(format!("key accepted; {image_models} GPT Image models listed"))
    }
}

/// gpt-image-2 and later take custom sizes.
fn custom_sizes(endpoint: &str) -> bool {
    endpoint.strip_prefix("gpt-image-").is_some_and(|rest| !rest.starts_with('1'))
}

#[derive(Debug, Deserialize)]
struct ImagesResponse {
    #[serde(default)]
    data: Vec<ImageData>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct ImageData {
    #[serde(default)]
    b64_json: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub input_tokens_details: Option<InputDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub struct InputDetails {
    #[serde(default)]
    pub text_tokens: u64,
    #[serde(default)]
    pub image_tokens: u64,
}

/// US dollars per million tokens (text in, image in, image out) of a GPT Image model, from the
/// model pages: 2.6 $5 / $8 / $30 [C]; gpt-image-2 $5 / — / $30 [T], the same assumed for the
/// 2.x line and image input.
fn rates(endpoint: &str) -> (f64, f64, f64) {
    match endpoint {
        e if e.starts_with("gpt-image-1-mini") => (2.0, 2.5, 8.0),
        e if e.starts_with("gpt-image-1") => (5.0, 10.0, 40.0),
        _ => (5.0, 8.0, 30.0),
    }
}

/// What `usage` cost in US dollars.
pub fn usage_usd(endpoint: &str, usage: &Usage) -> f64 {
    let (text_in, image_in, image_out) = rates(endpoint);
    let (text, image) = match &usage.input_tokens_details {
        Some(d) => (d.text_tokens, d.image_tokens),
        None => (usage.input_tokens, 0),
    };
    (text as f64 * text_in + image as f64 * image_in + usage.output_tokens as f64 * image_out) / 1e6
}

/// Maps an error response.
fn error(status: StatusCode, headers: &reqwest::header::HeaderMap, body: &[u8]) -> ProviderError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = &value["error"];
    let code = err["code"].as_str().unwrap_or("");
    let message = err["message"].as_str().unwrap_or("").to_string();
    if code == "moderation_blocked" || code == "content_policy_violation" {
        let stage = err["moderation_details"]["moderation_stage"].as_str();
        let categories: Vec<&str> = err["moderation_details"]["categories"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let what = match stage {
            Some("output") => "the generated image",
            _ => "the prompt or reference image",
        };
        let why = if categories.is_empty() { String::new() } else { format!(" ({})", categories.join(", ")) };
        return ProviderError::Moderated(format!("OpenAI's safety system flagged {what}{why}"));
    }
    if status == StatusCode::TOO_MANY_REQUESTS && code == "insufficient_quota" {
        return ProviderError::Fatal(format!(
            "{WHO}: the account is out of quota (HTTP 429){}",
            http::suffix(&message)
        ));
    }
    let detail = if code.is_empty() { message } else { format!("{code}: {message}") };
    http::status_error(WHO, "the Images API", status, headers, &detail)
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn submit(&self, _request: &GenerationRequest) -> Result<Submission, ProviderError> {
        // Synchronous API: the call happens at the first poll.
        Ok(Submission {
            task_id: format!("openai-{}", uuid::Uuid::new_v4()),
            polling_url: None,
            cost: None,
            submitted_at_ms: http::now_ms(),
        })
    }

    async fn poll(&self, request: &GenerationRequest, _submission: &Submission) -> Result<Poll, ProviderError> {
        match self.call(request).await {
            Ok(image) => Ok(Poll::Ready(image)),
            Err(ProviderError::Moderated(reason)) => Ok(Poll::Moderated { reason }),
            Err(err) => Err(err),
        }
    }

    fn poll_interval(&self, _attempt: u32) -> Duration {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests;
