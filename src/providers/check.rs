//! `faceoff providers check`: for each configured provider, one cheap authenticated call (an
//! account, credit or model-list endpoint) that says whether its key works, without generating.

use std::time::Duration;

use super::{
    ProviderError, bfl::BflProvider, fal::FalProvider, google::GoogleProvider, openai::OpenAiProvider,
    replicate::ReplicateProvider,
};
use crate::config::Config;

/// What the check found for one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `bfl`, `openai`, `google`, `fal`, `replicate`.
    pub provider: &'static str,
    /// The variables that configure it.
    pub variables: &'static str,
    pub status: CheckStatus,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// The key works.
    Ok,
    /// The key was refused or the provider could not be asked.
    Failed,
    /// No key: its models run in the sandbox (or on another route).
    NotConfigured,
}

/// Checks every provider; those without a key are reported as not configured.
pub async fn check_all(config: &Config) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let timeout = Duration::from_secs(20);
    let result = |provider, variables, outcome: Option<anyhow::Result<Result<String, ProviderError>>>| match outcome {
        None => CheckResult { provider, variables, status: CheckStatus::NotConfigured, detail: "no key".into() },
        Some(Ok(Ok(detail))) => CheckResult { provider, variables, status: CheckStatus::Ok, detail },
        Some(Ok(Err(err))) => CheckResult { provider, variables, status: CheckStatus::Failed, detail: err.to_string() },
        Some(Err(err)) => CheckResult { provider, variables, status: CheckStatus::Failed, detail: err.to_string() },
    };
    let bfl = match &config.bfl_api_key {
        Some(key) => Some(match BflProvider::new(key.clone(), config.bfl_api_url.clone()) {
            Ok(p) => Ok(p.check().await),
            Err(e) => Err(e),
        }),
        None => None,
    };
    out.push(result("bfl", "BFL_API_KEY, BFL_API_URL", bfl));
    let openai = match &config.openai_api_key {
        Some(key) => Some(match OpenAiProvider::with_timeout(key.clone(), config.openai_api_url.clone(), timeout) {
            Ok(p) => Ok(p.check().await),
            Err(e) => Err(e),
        }),
        None => None,
    };
    out.push(result("openai", "OPENAI_API_KEY, OPENAI_API_URL", openai));
    let google = match &config.gemini_api_key {
        Some(key) => Some(match GoogleProvider::with_timeout(key.clone(), config.gemini_api_url.clone(), timeout) {
            Ok(p) => Ok(p.check().await),
            Err(e) => Err(e),
        }),
        None => None,
    };
    out.push(result("google", "GEMINI_API_KEY, GEMINI_API_URL", google));
    let fal = match &config.fal_key {
        Some(key) => Some(
            match FalProvider::with_timeout(
                key.clone(),
                config.fal_queue_url.clone(),
                config.fal_api_url.clone(),
                timeout,
            ) {
                Ok(p) => Ok(p.check().await),
                Err(e) => Err(e),
            },
        ),
        None => None,
    };
    out.push(result("fal", "FAL_KEY, FAL_QUEUE_URL, FAL_API_URL", fal));
    let replicate = match &config.replicate_api_token {
        Some(key) => {
            Some(match ReplicateProvider::with_timeout(key.clone(), config.replicate_api_url.clone(), timeout) {
                Ok(p) => Ok(p.check().await),
                Err(e) => Err(e),
            })
        }
        None => None,
    };
    out.push(result("replicate", "REPLICATE_API_TOKEN, REPLICATE_API_URL", replicate));
    out
}

/// The report as printed, one line per provider.
pub fn report(results: &[CheckResult]) -> String {
    results
        .iter()
        .map(|r| {
            let status = match r.status {
                CheckStatus::Ok => "ok",
                CheckStatus::Failed => "FAILED",
                CheckStatus::NotConfigured => "not configured",
            };
            format!("{:<10} {:<15} {}  ({})", r.provider, status, r.detail, r.variables)
        })
        .collect::<Vec<_>>()
        .join("\n")
}
