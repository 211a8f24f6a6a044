//! fal.ai's queue API (`providers.md` §3), which reaches many makers' models by endpoint id
//! (`fal-ai/ideogram/v3`, `fal-ai/recraft/v3/text-to-image`, …).
//!
//! - Submit `POST {queue}{endpoint}` with `Authorization: Key …`; the body is the model's input
//!   (no wrapper): `prompt`, `seed`, `num_images: 1`, the size (`image_size {width, height}`, or
//!   `aspect_ratio` for endpoints sized by preset ratio), `output_format`, the safety checker on,
//!   and a reference image as a `data:` URI in `image_url` and `image_urls`.
//! - The answer's `request_id` and `status_url` are recorded; the result is at the status URL
//!   without `/status` (fal's `response_url`). Always use the returned URLs (the subpath rule).
//! - `IN_QUEUE`/`IN_PROGRESS` are pending (a request can stay queued forever: the job's
//!   deadline ends it); `COMPLETED` → fetch the result: `images[0].url` is downloaded at once
//!   (`*.fal.media`), `has_nsfw_concepts[0] == true` is moderation (fal returns a black image
//!   then). A failed request shows as an error body on the result (422 with a
//!   `content_policy_violation` is moderation).
//! - 429 waits for `Retry-After`; 5xx transient; 401/403 fatal.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use url::Url;

use super::{
    GenerationRequest, Poll, Provider, ProviderError, Submission,
    http::{self, MAX_JSON_BYTES},
};
use crate::config::Secret;

const WHO: &str = "fal";
/// Hosts fal serves results and queue URLs from.
const HOSTS: &[&str] = &["fal.media", "fal.run", "fal.ai"];

pub struct FalProvider {
    client: reqwest::Client,
    key: Secret,
    queue: Url,
    platform: Url,
}

impl std::fmt::Debug for FalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FalProvider({})", self.queue)
    }
}

impl FalProvider {
    pub fn new(key: Secret, queue: Url, platform: Url) -> anyhow::Result<Self> {
        Self::with_timeout(key, queue, platform, Duration::from_secs(60))
    }

    pub fn with_timeout(key: Secret, queue: Url, platform: Url, timeout: Duration) -> anyhow::Result<Self> {
        Ok(FalProvider { client: http::client(timeout)?, key, queue, platform })
    }

    fn auth(&self) -> String {
        format!("Key {}", self.key.expose())
    }

    /// The model input. Endpoints sized by preset ratio (Luma Photon, the Nano Banana and GPT
    /// Image hosts) take `aspect_ratio` (and Nano Banana a `resolution`); the others take
    /// `image_size` in pixels.
    pub fn body(request: &GenerationRequest) -> Value {
        let mut body = Map::new();
        body.insert("prompt".into(), json!(request.prompt));
        body.insert("seed".into(), json!(request.seed));
        body.insert("num_images".into(), json!(1));
        let e = request.endpoint.as_str();
        if e.contains("luma-photon") || e.contains("nano-banana") || e.starts_with("openai/") {
            body.insert("aspect_ratio".into(), json!(request.aspect_ratio));
            if e.contains("nano-banana") {
                let resolution = if request.mode == super::Mode::FourK { "4K" } else { "2K" };
                body.insert("resolution".into(), json!(resolution));
            }
        } else {
            body.insert("image_size".into(), json!({"width": request.width, "height": request.height}));
        }
        body.insert("output_format".into(), json!("png"));
        body.insert("enable_safety_checker".into(), json!(true));
        if let Some(reference) = &request.reference_image {
            let uri = http::data_uri(reference);
            body.insert("image_urls".into(), json!([uri.clone()]));
            body.insert("image_url".into(), json!(uri));
        }
        Value::Object(body)
    }

    /// Queue URLs must be fal's (https) or on the configured queue host.
    fn checked(&self, raw: &str) -> Result<Url, ProviderError> {
        let url = Url::parse(raw).map_err(|_| ProviderError::Fatal(format!("{WHO}: bad queue URL")))?;
        if !http::allowed(&url, &self.queue, HOSTS) {
            return Err(ProviderError::Fatal(format!("{WHO}: refusing queue URL {}", http::redact(&url))));
        }
        Ok(url)
    }

    async fn get_json(
        &self,
        url: Url,
        what: &str,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Value), ProviderError> {
        let response = self
            .client
            .get(url)
            .header("authorization", self.auth())
            .send()
            .await
            .map_err(|e| http::transient(WHO, what, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = http::read_capped(response, MAX_JSON_BYTES, WHO, "response").await?;
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, headers, value))
    }

    async fn result(&self, response_url: Url) -> Result<Poll, ProviderError> {
        let (status, headers, value) = self.get_json(response_url, "fetching the result").await?;
        if !status.is_success() {
            if is_policy_violation(&value) {
                return Ok(Poll::Moderated {
                    reason: format!("fal's safety checker refused the request{}", detail(&value)),
                });
            }
            return match http::status_error(WHO, "the result", status, &headers, &detail_text(&value)) {
                ProviderError::Fatal(why) => Ok(Poll::Failed { reason: why }),
                other => Err(other),
            };
        }
        if value.is_null() {
            return Err(ProviderError::Transient(format!("{WHO}: unexpected result (not JSON)")));
        }
        if value["has_nsfw_concepts"].as_array().and_then(|a| a.first()).and_then(Value::as_bool) == Some(true) {
            return Ok(Poll::Moderated { reason: "fal's safety checker flagged the generated image".into() });
        }
        let url = value["images"]
            .as_array()
            .and_then(|i| i.first())
            .and_then(|i| i["url"].as_str())
            .or_else(|| value["image"]["url"].as_str())
            .ok_or_else(|| ProviderError::Fatal(format!("{WHO}: the result has no image")))?;
        Ok(Poll::Ready(http::download(&self.client, url, &self.queue, HOSTS, WHO).await?))
    }

    /// One cheap authenticated call: the platform API's price of one endpoint.
    pub async fn check(&self) -> Result<String, ProviderError> {
        let mut url = self.platform.join("models/pricing").map_err(|e| ProviderError::Fatal(e.to_string()))?;
        url.query_pairs_mut().append_pair("endpoint_id", "fal-ai/ideogram/v3");
        let (status, headers, value) = self.get_json(url, "asking a price").await?;
        if !status.is_success() {
            return Err(http::status_error(WHO, "the platform API", status, &headers, &detail_text(&value)));
        }
        let price = value["prices"][0]["unit_price"].as_f64();
        Ok(match price {
            Some(p) => format!("key accepted; fal-ai/ideogram/v3 costs ${p} per unit"),
            None => "key accepted".into(),
        })
    }
}

fn is_policy_violation(value: &Value) -> bool {
    let text = value.to_string().to_lowercase();
    text.contains("content_policy_violation") || text.contains("nsfw")
}

fn detail_text(value: &Value) -> String {
    match &value["detail"] {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            items.iter().filter_map(|i| i["msg"].as_str().map(str::to_string)).collect::<Vec<_>>().join("; ")
        }
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn detail(value: &Value) -> String {
    let d = detail_text(value);
    if d.is_empty() { String::new() } else { format!(" ({})", d.chars().take(200).collect::<String>()) }
}

#[async_trait]
impl Provider for FalProvider {
    fn name(&self) -> &'static str {
        "fal"
    }

    async fn submit(&self, request: &GenerationRequest) -> Result<Submission, ProviderError> {
        let url = self
            .queue
            .join(&request.endpoint)
            .map_err(|_| ProviderError::Fatal(format!("{WHO}: bad endpoint {:?}", request.endpoint)))?;
        let response = self
            .client
            .post(url)
            .header("authorization", self.auth())
            .json(&Self::body(request))
            .send()
            .await
            .map_err(|e| http::transient(WHO, "submitting", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = http::read_capped(response, MAX_JSON_BYTES, WHO, "response").await?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            if status == StatusCode::UNPROCESSABLE_ENTITY && is_policy_violation(&value) {
                return Err(ProviderError::Moderated(format!(
                    "fal's safety checker refused the prompt{}",
                    detail(&value)
                )));
            }
            return Err(http::status_error(WHO, "submission", status, &headers, &detail_text(&value)));
        }
        let request_id = value["request_id"]
            .as_str()
            .ok_or_else(|| ProviderError::Transient(format!("{WHO}: unexpected submission response")))?;
        let status_url = match value["status_url"].as_str() {
            Some(url) => self.checked(url)?.to_string(),
            None => return Err(ProviderError::Transient(format!("{WHO}: the submission has no status URL"))),
        };
        Ok(Submission {
            task_id: request_id.to_string(),
            polling_url: Some(status_url),
            cost: None,
            submitted_at_ms: http::now_ms(),
        })
    }

    async fn poll(&self, _request: &GenerationRequest, submission: &Submission) -> Result<Poll, ProviderError> {
        let raw = submission
            .polling_url
            .as_deref()
            .ok_or_else(|| ProviderError::Fatal(format!("{WHO}: the task has no status URL")))?;
        let status_url = self.checked(raw)?;
        let (status, headers, value) = self.get_json(status_url.clone(), "polling").await?;
        if !status.is_success() {
            return Err(http::status_error(WHO, "status", status, &headers, &detail_text(&value)));
        }
        match value["status"].as_str() {
            Some("COMPLETED") => {
                let response_url = match value["response_url"].as_str() {
                    Some(url) => self.checked(url)?,
                    None => {
                        let mut url = status_url;
                        let path = url.path().trim_end_matches("/status").to_string();
                        url.set_path(&path);
                        url.set_query(None);
                        url
                    }
                };
                self.result(response_url).await
            }
            Some("IN_QUEUE") | Some("IN_PROGRESS") => Ok(Poll::Pending { progress: None }),
            Some(other) => Ok(Poll::Failed { reason: format!("{WHO}: unexpected request status {other:?}") }),
            None => Err(ProviderError::Transient(format!("{WHO}: unexpected status response"))),
        }
    }

    fn poll_interval(&self, attempt: u32) -> Duration {
        Duration::from_millis((500 + 250 * u64::from(attempt)).min(3_000))
    }
}

#[cfg(test)]
mod tests;
