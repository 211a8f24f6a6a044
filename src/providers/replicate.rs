//! Replicate's predictions API (`providers.md` §2).
//!
//! - Create `POST {base}models/{owner}/{name}/predictions` with `Authorization: Bearer` and
//!   `Prefer: wait=5` (a fast model answers finished), body `{"input": {…}}`: `prompt`, `seed`,
//!   `aspect_ratio`, `output_format`, and a reference image as a `data:` URI in `image_input`.
//! - Record the prediction `id` and `urls.get`; poll it. `starting`/`processing` are pending;
//!   `succeeded` → `output` (a URL or a list of URLs) is downloaded at once from
//!   `replicate.delivery` (files are deleted after an hour); `failed` with an NSFW/sensitive
//!   `error` is moderation, other `failed`, `canceled` and `aborted` are failures.
//! - 429 (`{"detail": "Request was throttled…"}`) waits for `Retry-After`; 5xx transient;
//!   401/402/403/404/422 fatal.

use std::time::Duration;

use async_trait::async_trait;

use serde_json::{Map, Value, json};
use url::Url;

use super::{
    GenerationRequest, Poll, Provider, ProviderError, Submission,
    http::{self, MAX_JSON_BYTES},
};
use crate::config::Secret;

const WHO: &str = "replicate";
const HOSTS: &[&str] = &["replicate.delivery", "replicate.com"];

pub struct ReplicateProvider {
    client: reqwest::Client,
    token: Secret,
    base: Url,
}

impl std::fmt::Debug for ReplicateProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplicateProvider({})", self.base)
    }
}

impl ReplicateProvider {
    pub fn new(token: Secret, base: Url) -> anyhow::Result<Self> {
        Self::with_timeout(token, base, Duration::from_secs(60))
    }

    pub fn with_timeout(token: Secret, base: Url, timeout: Duration) -> anyhow::Result<Self> {
        Ok(ReplicateProvider { client: http::client(timeout)?, token, base })
    }

    pub fn body(request: &GenerationRequest) -> Value {
        let mut input = Map::new();
        input.insert("prompt".into(), json!(request.prompt));
        input.insert("seed".into(), json!(request.seed));
        input.insert("aspect_ratio".into(), json!(request.aspect_ratio));
        input.insert("output_format".into(), json!("png"));
        if request.endpoint.starts_with("bytedance/seedream") {
            // Seedream sizes by `size`: "2K" or "4K" (with `aspect_ratio`).
            let size = if request.mode == super::Mode::FourK { "4K" } else { "2K" };
            input.insert("size".into(), json!(size));
        }
        if let Some(reference) = &request.reference_image {
            input.insert("image_input".into(), json!([http::data_uri(reference)]));
        }
        json!({ "input": input })
    }

    fn checked(&self, raw: &str) -> Result<Url, ProviderError> {
        let url = Url::parse(raw).map_err(|_| ProviderError::Fatal(format!("{WHO}: bad prediction URL")))?;
        if !http::allowed(&url, &self.base, &["replicate.com"]) {
            return Err(ProviderError::Fatal(format!("{WHO}: refusing prediction URL {}", http::redact(&url))));
        }
        Ok(url)
    }

    async fn read(&self, response: reqwest::Response, what: &str) -> Result<Value, ProviderError> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = http::read_capped(response, MAX_JSON_BYTES, WHO, "response").await?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = value["detail"].as_str().or_else(|| value["title"].as_str()).unwrap_or("").to_string();
            return Err(http::status_error(WHO, what, status, &headers, &detail));
        }
        if value.is_null() {
            return Err(ProviderError::Transient(format!("{WHO}: unexpected {what} response")));
        }
        Ok(value)
    }

    /// One cheap authenticated call: `GET {base}account`.
    pub async fn check(&self) -> Result<String, ProviderError> {
        let url = self.base.join("account").map_err(|e| ProviderError::Fatal(e.to_string()))?;
        let response = self
            .client
            .get(url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| http::transient(WHO, "reading the account", &e))?;
        let value = self.read(response, "account").await?;
        Ok(match value["username"].as_str() {
            Some(user) => format!("key accepted (account {user})"),
            None => "key accepted".into(),
        })
    }
}

/// The first output URL: `output` is a string or a list.
fn output_url(output: &Value) -> Option<&str> {
    match output {
        Value::String(s) => Some(s),
        Value::Array(items) => items.iter().find_map(Value::as_str),
        _ => None,
    }
}

fn is_sensitive(error: &str) -> bool {
    let e = error.to_lowercase();
    e.contains("nsfw") || e.contains("sensitive") || e.contains("safety") || e.contains("flagged")
}

#[async_trait]
impl Provider for ReplicateProvider {
    fn name(&self) -> &'static str {
        "replicate"
    }

    async fn submit(&self, request: &GenerationRequest) -> Result<Submission, ProviderError> {
        let url = self
            .base
            .join(&format!("models/{}/predictions", request.endpoint))
            .map_err(|_| ProviderError::Fatal(format!("{WHO}: bad endpoint {:?}", request.endpoint)))?;
        let response = self
            .client
            .post(url)
            .bearer_auth(self.token.expose())
            .header("prefer", "wait=5")
            .json(&Self::body(request))
            .send()
            .await
            .map_err(|e| http::transient(WHO, "creating a prediction", &e))?;
        let value = self.read(response, "prediction").await?;
        let id =
            value["id"].as_str().ok_or_else(|| ProviderError::Transient(format!("{WHO}: the prediction has no id")))?;
        let get = match value["urls"]["get"].as_str() {
            Some(get) => self.checked(get)?.to_string(),
            None => self
                .base
                .join(&format!("predictions/{id}"))
                .map_err(|e| ProviderError::Fatal(e.to_string()))?
                .to_string(),
        };
        if value["status"] == "failed"
            && let Some(error) = value["error"].as_str()
            && is_sensitive(error)
        {
            return Err(ProviderError::Moderated(format!("Replicate's safety checker flagged the request ({error})")));
        }
        Ok(Submission { task_id: id.to_string(), polling_url: Some(get), cost: None, submitted_at_ms: http::now_ms() })
    }

    async fn poll(&self, _request: &GenerationRequest, submission: &Submission) -> Result<Poll, ProviderError> {
        let raw = submission
            .polling_url
            .as_deref()
            .ok_or_else(|| ProviderError::Fatal(format!("{WHO}: the prediction has no URL")))?;
        let url = self.checked(raw)?;
        let response = self
            .client
            .get(url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| http::transient(WHO, "polling", &e))?;
        let value = self.read(response, "prediction").await?;
        match value["status"].as_str() {
            Some("starting") | Some("processing") => Ok(Poll::Pending { progress: None }),
            Some("succeeded") => {
                let url = output_url(&value["output"])
                    .ok_or_else(|| ProviderError::Fatal(format!("{WHO}: the prediction has no output")))?;
                Ok(Poll::Ready(http::download(&self.client, url, &self.base, HOSTS, WHO).await?))
            }
            Some("failed") => {
                let error = value["error"].as_str().unwrap_or("the model failed").to_string();
                if is_sensitive(&error) {
                    Ok(Poll::Moderated { reason: format!("Replicate's safety checker flagged the request ({error})") })
                } else {
                    Ok(Poll::Failed { reason: format!("{WHO}: {}", error.chars().take(300).collect::<String>()) })
                }
            }
            Some(s @ ("canceled" | "aborted")) => Ok(Poll::Failed { reason: format!("{WHO}: the prediction was {s}") }),
            Some(other) => Ok(Poll::Failed { reason: format!("{WHO}: unexpected prediction status {other:?}") }),
            None => Err(ProviderError::Transient(format!("{WHO}: unexpected prediction response"))),
        }
    }

    fn poll_interval(&self, attempt: u32) -> Duration {
        Duration::from_millis((500 + 250 * u64::from(attempt)).min(3_000))
    }
}

#[cfg(test)]
mod tests;
