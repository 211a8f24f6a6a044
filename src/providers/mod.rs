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
pub mod driver;
pub mod sandbox;

pub use bfl::BflProvider;
pub use driver::{Drive, DriveHooks, DriveLimits, Driven, NoHooks, drive};
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
    /// Real providers by catalog provider slug (e.g. `bfl`), present when their key is set.
    pub real: Vec<(String, Arc<dyn Provider>)>,
}

impl Providers {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let mut real: Vec<(String, Arc<dyn Provider>)> = Vec::new();
        if let Some(key) = &config.bfl_api_key {
            real.push(("bfl".into(), Arc::new(BflProvider::new(key.clone(), config.bfl_api_url.clone())?)));
        }
        Ok(Providers { sandbox: Arc::new(SandboxProvider::from_config(config)), real })
    }

    /// The provider that runs models of the catalog provider `provider_slug`: the real one when
    /// configured, otherwise the sandbox.
    pub fn for_catalog_provider(&self, provider_slug: &str) -> Arc<dyn Provider> {
        self.real
            .iter()
            .find(|(slug, _)| slug == provider_slug)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.sandbox.clone() as Arc<dyn Provider>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
