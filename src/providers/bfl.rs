//! Black Forest Labs (api.bfl.ai): the FLUX models over HTTP (protocol notes in
//! `providers.md`, the OpenAPI document in `reference/bfl-openapi.json`).
//!
//! - Submit `POST {base}/v1/{endpoint}` with the `x-key` header and only the fields of the
//!   endpoint's family: FLUX.2 takes `width`/`height` (multiples of 16, at most 4 MP) and
//!   `input_image` (base64); FLUX1.1 [pro] Ultra takes `aspect_ratio` and `image_prompt`; Kontext
//!   takes `aspect_ratio` and `input_image`; FLUX1.1 [pro] takes `width`/`height` 256–1440 in
//!   multiples of 32.
//! - Always poll the returned `polling_url` (it may name another cluster). Statuses other than the
//!   terminal five count as in progress; `Task not found` right after submission is replication lag.
//! - On `Ready`, download `result.sample` at once: without `x-key`, redirects off, https only
//!   (http only on the configured base URL's host, for local mock servers), at most 30 MB.
//! - HTTP 429 and 5xx (and network errors) are transient; 402, 422 and other 4xx are fatal;
//!   moderation carries the `details` reasons and is never charged.

use std::{io::Cursor, time::Duration};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use reqwest::{StatusCode, redirect::Policy};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use super::{GenerationRequest, Image, Poll, Provider, ProviderError, Submission, http};
use crate::config::Secret;
use http::redact;

/// The largest image we download.
pub const MAX_DOWNLOAD_BYTES: usize = http::MAX_IMAGE_BYTES;
/// `Task not found` this soon after submission is treated as replication lag, not an error.
const NOT_FOUND_GRACE_MS: i64 = 30_000;

pub struct BflProvider {
    api: reqwest::Client,
    delivery: reqwest::Client,
    key: Secret,
    base: Url,
}

impl std::fmt::Debug for BflProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BflProvider({})", self.base)
    }
}

/// Which request shape an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Flux2,
    Ultra,
    Kontext,
    Pro11,
}

fn family(endpoint: &str) -> Family {
    if endpoint.starts_with("flux-2") {
        Family::Flux2
    } else if endpoint.starts_with("flux-pro-1.1-ultra") {
        Family::Ultra
    } else if endpoint.starts_with("flux-kontext") {
        Family::Kontext
    } else {
        Family::Pro11
    }
}

impl BflProvider {
    pub fn new(key: Secret, base: Url) -> anyhow::Result<Self> {
        let api = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .redirect(Policy::none())
            .user_agent(concat!("faceoff/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let delivery = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .redirect(Policy::none())
            .user_agent(concat!("faceoff/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(BflProvider { api, delivery, key, base })
    }

    /// Plain http is allowed only towards the configured base URL's host (a local mock).
    fn allowed(&self, url: &Url, bfl_only: bool) -> bool {
        let host = url.host_str().unwrap_or("");
        match url.scheme() {
            "https" => {
                !bfl_only
                    || host == "bfl.ai"
                    || host.ends_with(".bfl.ai")
                    || host.ends_with(".bfl.ml")
                    || Some(host) == self.base.host_str()
            }
            "http" => self.base.scheme() == "http" && Some(host) == self.base.host_str(),
            _ => false,
        }
    }

    /// The JSON body for the endpoint's family: only the fields it accepts.
    pub fn body(request: &GenerationRequest) -> Value {
        let mut body = Map::new();
        body.insert("prompt".into(), json!(request.prompt));
        body.insert("seed".into(), json!(request.seed));
        body.insert("output_format".into(), json!("jpeg"));
        body.insert("safety_tolerance".into(), json!(2));
        let reference =
            request.reference_image.as_ref().map(|b| base64::engine::general_purpose::STANDARD.encode(b.as_ref()));
        match family(&request.endpoint) {
            Family::Flux2 => {
                let (w, h) = flux2_size(request.width, request.height);
                body.insert("width".into(), json!(w));
                body.insert("height".into(), json!(h));
                if let Some(image) = reference {
                    body.insert("input_image".into(), json!(image));
                }
            }
            Family::Ultra => {
                body.insert("aspect_ratio".into(), json!(request.aspect_ratio));
                if let Some(image) = reference {
                    body.insert("image_prompt".into(), json!(image));
                }
            }
            Family::Kontext => {
                body.insert("aspect_ratio".into(), json!(request.aspect_ratio));
                if let Some(image) = reference {
                    body.insert("input_image".into(), json!(image));
                }
            }
            Family::Pro11 => {
                let (w, h) = pro11_size(request.width, request.height);
                body.insert("width".into(), json!(w));
                body.insert("height".into(), json!(h));
                if let Some(image) = reference {
                    body.insert("image_prompt".into(), json!(image));
                }
            }
        }
        Value::Object(body)
    }

    async fn download(&self, sample: &str) -> Result<Image, ProviderError> {
        let url = Url::parse(sample).map_err(|_| ProviderError::Fatal(format!("bfl: bad result URL {sample:?}")))?;
        if !self.allowed(&url, false) {
            return Err(ProviderError::Fatal(format!("bfl: refusing to download from {}", redact(&url))));
        }
        // A pre-signed URL: no x-key (it must not leak to the delivery host).
        let response = self.delivery.get(url.clone()).send().await.map_err(|e| transient("downloading", &e))?;
        let status = response.status();
        if matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE) {
            return Err(ProviderError::Fatal(format!(
                "bfl: the result expired before it could be downloaded (HTTP {status})"
            )));
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ProviderError::Transient(format!("bfl: delivery answered HTTP {status}")));
        }
        if !status.is_success() {
            return Err(ProviderError::Fatal(format!("bfl: delivery answered HTTP {status}")));
        }
        let bytes = http::read_capped(response, MAX_DOWNLOAD_BYTES, "bfl", "result").await?;
        let (content_type, width, height) = http::inspect(&bytes, "bfl")?;
        Ok(Image { bytes, content_type: content_type.into(), width, height, usage_usd: None })
    }
}

impl BflProvider {
    /// One cheap authenticated call: `GET {base}/v1/credits` (`{"credits": n}`).
    pub async fn check(&self) -> Result<String, ProviderError> {
        let url = self.base.join("v1/credits").map_err(|e| ProviderError::Fatal(e.to_string()))?;
        let response = self
            .api
            .get(url)
            .header("x-key", self.key.expose())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| transient("reading credits", &e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| transient("reading credits", &e))?;
        if !status.is_success() {
            return Err(http_error("the credits check", status, &text));
        }
        let credits = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["credits"].as_f64());
        Ok(match credits {
            Some(c) => format!("key accepted; {c} credits left"),
            None => "key accepted".into(),
        })
    }
}

/// FLUX.2: both sides multiples of 16, at least 64, at most 4 MP.
fn flux2_size(width: u32, height: u32) -> (u32, u32) {
    let (mut w, mut h) = (f64::from(width.max(64)), f64::from(height.max(64)));
    let max = 4.0 * 1024.0 * 1024.0;
    if w * h > max {
        let scale = (max / (w * h)).sqrt();
        w *= scale;
        h *= scale;
    }
    let r16 = |v: f64| (((v / 16.0).floor() as u32) * 16).max(64);
    (r16(w), r16(h))
}

/// FLUX1.1 [pro]: 256–1440 on each side, multiples of 32, keeping the aspect ratio.
fn pro11_size(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let scale = 1440.0 / w.max(h);
    let r32 = |v: f64| (((v * scale / 32.0).round() as u32) * 32).clamp(256, 1440);
    (r32(w), r32(h))
}

fn transient(what: &str, err: &reqwest::Error) -> ProviderError {
    http::transient("bfl", what, err)
}

/// Maps an HTTP error status to a provider error.
fn http_error(what: &str, status: StatusCode, body: &str) -> ProviderError {
    let detail = error_detail(body);
    let message = format!("bfl: {what} answered HTTP {status}{}", detail.map(|d| format!(": {d}")).unwrap_or_default());
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => ProviderError::Transient(message),
        s if s.is_server_error() => ProviderError::Transient(message),
        StatusCode::PAYMENT_REQUIRED => ProviderError::Fatal(format!(
            "bfl: the provider account is out of credits (HTTP 402){}",
            detail_suffix(body)
        )),
        _ => ProviderError::Fatal(message),
    }
}

fn detail_suffix(body: &str) -> String {
    error_detail(body).map(|d| format!(": {d}")).unwrap_or_default()
}

/// A short explanation from an error body (`{"detail": "…"}`, FastAPI's `{"detail": [{"msg"}]}`).
fn error_detail(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let detail = value.get("detail").or_else(|| value.get("message")).or_else(|| value.get("error"))?;
    let text = match detail {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| {
                let msg = i.get("msg")?.as_str()?;
                let loc = i.get("loc").and_then(|l| l.as_array()).map(|l| {
                    l.iter()
                        .filter_map(|p| p.as_str().map(str::to_string).or_else(|| Some(p.to_string())))
                        .collect::<Vec<_>>()
                        .join(".")
                });
                Some(match loc {
                    Some(loc) if !loc.is_empty() => format!("{loc}: {msg}"),
                    _ => msg.to_string(),
                })
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    Some(text.chars().take(300).collect())
}

#[derive(Debug, Deserialize)]
struct SubmitResponse {
    id: String,
    polling_url: Option<String>,
    cost: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ResultResponse {
    status: String,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    progress: Option<f64>,
    #[serde(default)]
    details: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// The moderation reasons in `details` ("Moderation Reasons": [...]), or a generic sentence.
fn moderation_reason(status: &str, details: Option<&Value>) -> String {
    let reasons: Vec<String> = details
        .and_then(|d| d.get("Moderation Reasons").or_else(|| d.get("moderation_reasons")))
        .and_then(|r| r.as_array())
        .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let what = if status == "Content Moderated" { "the generated image" } else { "the prompt or reference image" };
    if reasons.is_empty() {
        format!("the provider's safety filter flagged {what}")
    } else {
        format!("the provider's safety filter flagged {what} ({})", reasons.join(", "))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[async_trait]
impl Provider for BflProvider {
    fn name(&self) -> &'static str {
        "bfl"
    }

    async fn submit(&self, request: &GenerationRequest) -> Result<Submission, ProviderError> {
        let url = self
            .base
            .join(&format!("v1/{}", request.endpoint))
            .map_err(|_| ProviderError::Fatal(format!("bfl: bad endpoint {:?}", request.endpoint)))?;
        let response = self
            .api
            .post(url)
            .header("x-key", self.key.expose())
            .header("accept", "application/json")
            .json(&Self::body(request))
            .send()
            .await
            .map_err(|e| transient("submitting", &e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| transient("submitting", &e))?;
        if !status.is_success() {
            return Err(http_error("submission", status, &text));
        }
        let parsed: SubmitResponse = serde_json::from_str(&text)
            .map_err(|e| ProviderError::Transient(format!("bfl: unexpected submission response: {e}")))?;
        let polling_url = match parsed.polling_url {
            Some(url) => url,
            None => {
                let mut url = self.base.join("v1/get_result").map_err(|e| ProviderError::Fatal(e.to_string()))?;
                url.query_pairs_mut().append_pair("id", &parsed.id);
                url.to_string()
            }
        };
        Ok(Submission {
            task_id: parsed.id,
            polling_url: Some(polling_url),
            cost: parsed.cost,
            submitted_at_ms: now_ms(),
        })
    }

    async fn poll(&self, _request: &GenerationRequest, submission: &Submission) -> Result<Poll, ProviderError> {
        let raw = submission
            .polling_url
            .as_deref()
            .ok_or_else(|| ProviderError::Fatal("bfl: the task has no polling URL".into()))?;
        let url = Url::parse(raw).map_err(|_| ProviderError::Fatal(format!("bfl: bad polling URL {raw:?}")))?;
        if !self.allowed(&url, true) {
            return Err(ProviderError::Fatal(format!("bfl: refusing to poll {}", redact(&url))));
        }
        let response = self
            .api
            .get(url)
            .header("x-key", self.key.expose())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| transient("polling", &e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| transient("polling", &e))?;
        if !status.is_success() {
            return Err(http_error("polling", status, &text));
        }
        let result: ResultResponse = serde_json::from_str(&text)
            .map_err(|e| ProviderError::Transient(format!("bfl: unexpected polling response: {e}")))?;
        match result.status.as_str() {
            "Ready" => {
                let sample = result.result.as_ref().and_then(|r| r.get("sample")).and_then(|s| s.as_str());
                match sample {
                    Some(sample) => Ok(Poll::Ready(self.download(sample).await?)),
                    // Seen in the wild: Ready without `sample`; polling again usually has it.
                    None => Err(ProviderError::Transient("bfl: the result is ready but has no sample URL yet".into())),
                }
            }
            "Request Moderated" | "Content Moderated" => {
                Ok(Poll::Moderated { reason: moderation_reason(&result.status, result.details.as_ref()) })
            }
            "Error" => {
                let detail = result
                    .error
                    .as_ref()
                    .or(result.details.as_ref())
                    .map(|d| match d {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .map(|d| format!(": {}", d.chars().take(300).collect::<String>()))
                    .unwrap_or_default();
                Ok(Poll::Failed { reason: format!("the provider could not generate the image{detail}") })
            }
            "Task not found" => {
                if now_ms() - submission.submitted_at_ms < NOT_FOUND_GRACE_MS {
                    Ok(Poll::Pending { progress: None })
                } else {
                    Ok(Poll::Failed { reason: "the provider no longer knows this task (it may have expired)".into() })
                }
            }
            // "Pending" and anything new ("Generating", "Reasoning", …) mean: still working.
            _ => {
                let progress =
                    result.progress.map(|p| if p > 1.0 { p / 100.0 } else { p }).map(|p| p.clamp(0.0, 1.0) as f32);
                Ok(Poll::Pending { progress })
            }
        }
    }

    fn poll_interval(&self, attempt: u32) -> Duration {
        // 0.75 s at first, then gradually up to 3 s.
        Duration::from_millis((750 + 250 * u64::from(attempt)).min(3_000))
    }
}

/// Helper for tests of other modules: the bytes of a small JPEG.
pub fn sample_jpeg(width: u32, height: u32) -> Bytes {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = Cursor::new(Vec::new());
    let _ = img.write_to(&mut out, image::ImageFormat::Jpeg);
    Bytes::from(out.into_inner())
}

#[cfg(test)]
mod tests;
