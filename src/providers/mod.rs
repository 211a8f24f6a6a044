//! Image providers behind one trait: the embedded `sandbox` renderer (the default, offline) and
//! real APIs such as Black Forest Labs (`bfl`). A provider turns a [`GenerationRequest`] into a
//! task ([`Submission`]) that is persisted before polling, so a restarted worker resumes the same
//! task instead of paying for a second one; polling ends in image bytes or a reason. [`drive`]
//! runs that whole exchange for the job worker and the showcase images alike.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::Config;

pub mod bfl;
pub mod check;
pub mod driver;
pub mod fal;
pub mod google;
pub mod http;
pub mod openai;
pub mod replicate;
pub mod sandbox;

pub use bfl::BflProvider;
pub use driver::{Drive, DriveHooks, DriveLimits, Driven, NoHooks, drive, drive_routes};
pub use fal::FalProvider;
pub use google::GoogleProvider;
pub use openai::OpenAiProvider;
pub use replicate::ReplicateProvider;
pub use sandbox::SandboxProvider;

/// Resolution modes offered in the catalog. Also the `mode` columns of `variant_price` and
/// `generation_run` (CHECK `IN ('2k', '4k')`), which sqlx decodes directly: another value there is
/// a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text")]
pub enum Mode {
    #[serde(rename = "2k")]
    #[sqlx(rename = "2k")]
    TwoK,
    #[serde(rename = "4k")]
    #[sqlx(rename = "4k")]
    FourK,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::TwoK => "2k",
            Mode::FourK => "4k",
        }
    }

    /// What users see: "1080p / 2k" or "4k".
    pub fn label(self) -> &'static str {
        match self {
            Mode::TwoK => "1080p / 2k",
            Mode::FourK => "4k",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "2k" => Some(Mode::TwoK),
            "4k" => Some(Mode::FourK),
            _ => None,
        }
    }

    /// The target pixel count of the mode: about 2 MP for 2k, 4 MP for 4k.
    fn target_pixels(self) -> f64 {
        match self {
            Mode::TwoK => 2.0e6,
            Mode::FourK => 4.0e6,
        }
    }
}

/// Output dimensions for an aspect ratio such as `"16:9"` in a mode: as close to the mode's
/// pixel budget as possible without exceeding it, both sides multiples of 16 (what FLUX.2
/// requires). `None` for a malformed ratio.
pub fn dimensions(aspect_ratio: &str, mode: Mode) -> Option<(u32, u32)> {
    let (w, h) = aspect_ratio.split_once(':')?;
    let (w, h): (f64, f64) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    if !(w > 0.0 && h > 0.0 && w / h <= 4.0 && h / w <= 4.0) {
        return None;
    }
    let scale = (mode.target_pixels() / (w * h)).sqrt();
    let round16 = |v: f64| ((v / 16.0).floor() as u32).max(4) * 16;
    Some((round16(w * scale), round16(h * scale)))
}

/// The adapters a catalog route can name (`via`), besides the sandbox every model falls back to.
pub const ADAPTERS: [&str; 5] = ["bfl", "openai", "google", "fal", "replicate"];

/// Where one model variant can run: an adapter and the endpoint id it knows the model by
/// (`openai:gpt-image-2`, `fal:fal-ai/ideogram/v3`). Written `via:endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    pub via: String,
    pub endpoint: String,
}

impl Route {
    pub fn new(via: &str, endpoint: &str) -> Route {
        Route { via: via.into(), endpoint: endpoint.into() }
    }

    /// Parses `via:endpoint` (the endpoint may contain `:` and `/`); `None` unless `via` is one
    /// of [`ADAPTERS`] and the endpoint is not empty.
    pub fn parse(s: &str) -> Option<Route> {
        let (via, endpoint) = s.split_once(':')?;
        let (via, endpoint) = (via.trim(), endpoint.trim());
        (ADAPTERS.contains(&via) && !endpoint.is_empty()).then(|| Route::new(via, endpoint))
    }

    /// The route that runs a model offline.
    pub fn sandbox(endpoint: &str) -> Route {
        Route::new("sandbox", endpoint)
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.via, self.endpoint)
    }
}

/// One image to generate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// The provider's endpoint id for the model variant (e.g. `flux-2-pro`).
    pub endpoint: String,
    /// Our model slug (e.g. `flux-2`), used by the sandbox for its rendering and fault injection.
    pub model: String,
    /// Our display name of the model and variant (drawn on sandbox renderings).
    pub model_name: String,
    pub prompt: String,
    pub seed: u32,
    pub mode: Mode,
    pub aspect_ratio: String,
    pub width: u32,
    pub height: u32,
    /// An optional reference image (already validated and re-encoded as PNG or JPEG).
    #[serde(skip)]
    pub reference_image: Option<Bytes>,
}

/// A task accepted by a provider: what must be persisted to resume polling after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub task_id: String,
    /// Where to poll (BFL returns a URL that may point at another cluster).
    pub polling_url: Option<String>,
    /// The provider's own cost figure, when it reports one.
    pub cost: Option<f64>,
    /// When the task was accepted (milliseconds since the epoch).
    pub submitted_at_ms: i64,
}

/// The state of a task.
#[derive(Debug, Clone)]
pub enum Poll {
    Pending {
        progress: Option<f32>,
    },
    Ready(Image),
    /// The provider's safety filter refused the prompt or the result: never charged.
    Moderated {
        reason: String,
    },
    /// The provider gave up on the task: never charged.
    Failed {
        reason: String,
    },
}

/// Image bytes as delivered, to be stored in our object store.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Bytes,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// What the provider reports this image cost, in US dollars, for makers that bill by usage
    /// (tokens); `None` for flat-priced images.
    pub usage_usd: Option<f64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying with backoff: timeouts, connection errors, 429, 5xx.
    #[error("temporary provider failure: {0}")]
    Transient(String),
    /// Retrying will not help: bad request (422), no credit at the provider (402), bad key.
    #[error("provider refused the request: {0}")]
    Fatal(String),
    /// The provider's safety filter refused the request at submission.
    #[error("blocked by the provider's safety filter: {0}")]
    Moderated(String),
    /// HTTP 429: retried like a transient failure, waiting at least `retry_after` when the
    /// provider said how long.
    #[error("{message}")]
    RateLimited { message: String, retry_after: Option<Duration> },
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Short name recorded with each job (`sandbox`, `bfl`).
    fn name(&self) -> &'static str;
    /// Starts a generation.
    async fn submit(&self, request: &GenerationRequest) -> Result<Submission, ProviderError>;
    /// Asks how a task is doing; `Ready` carries the downloaded image bytes.
    async fn poll(&self, request: &GenerationRequest, submission: &Submission) -> Result<Poll, ProviderError>;
    /// How long to wait before the `attempt`-th poll (0-based).
    fn poll_interval(&self, attempt: u32) -> Duration {
        let ms = 500u64.saturating_mul(1 << attempt.min(4));
        Duration::from_millis(ms.min(5_000))
    }
}

/// The providers configured for this process.
#[derive(Clone)]
pub struct Providers {
    pub sandbox: Arc<SandboxProvider>,
    /// Real adapters by name (`bfl`, `openai`, `google`, `fal`, `replicate`), present when
    /// their key is set.
    pub real: Vec<(String, Arc<dyn Provider>)>,
}

impl Providers {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let mut real: Vec<(String, Arc<dyn Provider>)> = Vec::new();
        if let Some(key) = &config.bfl_api_key {
            real.push(("bfl".into(), Arc::new(BflProvider::new(key.clone(), config.bfl_api_url.clone())?)));
        }
        if let Some(key) = &config.openai_api_key {
            real.push(("openai".into(), Arc::new(OpenAiProvider::new(key.clone(), config.openai_api_url.clone())?)));
        }
        if let Some(key) = &config.gemini_api_key {
            real.push(("google".into(), Arc::new(GoogleProvider::new(key.clone(), config.gemini_api_url.clone())?)));
        }
        if let Some(key) = &config.fal_key {
            let fal = FalProvider::new(key.clone(), config.fal_queue_url.clone(), config.fal_api_url.clone())?;
            real.push(("fal".into(), Arc::new(fal)));
        }
        if let Some(key) = &config.replicate_api_token {
            let replicate = ReplicateProvider::new(key.clone(), config.replicate_api_url.clone())?;
            real.push(("replicate".into(), Arc::new(replicate)));
        }
        Ok(Providers { sandbox: Arc::new(SandboxProvider::from_config(config)), real })
    }

    /// The configured adapter named `via`, if any.
    pub fn adapter(&self, via: &str) -> Option<Arc<dyn Provider>> {
        self.real.iter().find(|(slug, _)| slug == via).map(|(_, p)| p.clone())
    }

    /// The routes a job of a variant with `routes` tries, in order, each with its adapter:
    /// the configured ones (an unconfigured route is skipped), or the sandbox alone when none
    /// is configured (every model runs offline).
    pub fn plan(&self, routes: &[Route], fallback_endpoint: &str) -> Vec<(Route, Arc<dyn Provider>)> {
        let planned: Vec<(Route, Arc<dyn Provider>)> =
            routes.iter().filter_map(|r| self.adapter(&r.via).map(|p| (r.clone(), p))).collect();
        if planned.is_empty() {
            let endpoint = routes.first().map(|r| r.endpoint.as_str()).unwrap_or(fallback_endpoint);
            vec![(Route::sandbox(endpoint), self.sandbox.clone() as Arc<dyn Provider>)]
        } else {
            planned
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_print() {
        let r = Route::parse("fal:fal-ai/ideogram/v3").expect("route");
        assert_eq!((r.via.as_str(), r.endpoint.as_str()), ("fal", "fal-ai/ideogram/v3"));
        assert_eq!(r.to_string(), "fal:fal-ai/ideogram/v3");
        assert_eq!(Route::parse("replicate:luma/photon").map(|r| r.via), Some("replicate".into()));
        assert_eq!(Route::parse("acme:x"), None);
        assert_eq!(Route::parse("openai:"), None);
        assert_eq!(Route::parse("no-colon"), None);
    }

    #[test]
    fn dimensions_fit_the_mode_in_multiples_of_16() {
        for ratio in ["1:1", "16:9", "9:16", "3:4", "4:3", "21:9"] {
            for mode in [Mode::TwoK, Mode::FourK] {
                let (w, h) = dimensions(ratio, mode).expect("valid ratio");
                assert_eq!(w % 16, 0, "{ratio} {mode:?}");
                assert_eq!(h % 16, 0, "{ratio} {mode:?}");
                let pixels = f64::from(w) * f64::from(h);
                assert!(pixels <= mode.target_pixels(), "{ratio} {mode:?}: {w}x{h}");
                assert!(pixels >= mode.target_pixels() * 0.9, "{ratio} {mode:?}: {w}x{h}");
            }
        }
        assert_eq!(dimensions("1:1", Mode::FourK), Some((2000, 2000)));
        assert!(dimensions("16:9", Mode::TwoK).is_some_and(|(w, h)| w > h));
        assert_eq!(dimensions("0:1", Mode::TwoK), None);
        assert_eq!(dimensions("nonsense", Mode::TwoK), None);
        assert_eq!(dimensions("10:1", Mode::TwoK), None);
    }
}
