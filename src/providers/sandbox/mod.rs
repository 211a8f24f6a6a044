//! The sandbox provider: renders a deterministic image locally from (prompt, seed, model, width,
//! height) — the same inputs give the same bytes — clearly marked as a sandbox rendering. It is
//! the default when no real provider key is configured, so the whole product works offline.
//! Latency (`FACEOFF_SANDBOX_LATENCY_MS`) and failures (`FACEOFF_SANDBOX_FAIL`: `model` fails,
//! `model:moderated` is blocked, `model:transient` fails once then succeeds) can be injected;
//! a prompt containing `#moderate` is always blocked. With `FACEOFF_SANDBOX_IMAGE` set it
//! returns that stored file for every job instead of rendering (no image work: what is left to
//! measure is the queue).

use std::{
    io::Cursor,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, imageops::FilterType};
use sha2::{Digest, Sha256};

use super::{GenerationRequest, Image, Poll, Provider, ProviderError, Submission};
use crate::{config::Config, storage::text};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    Fail,
    Moderated,
    /// Fails with a transient error on the first submission of each task, then works.
    Transient,
}

#[derive(Debug)]
pub struct SandboxProvider {
    latency: Duration,
    faults: Vec<(String, Fault)>,
    transient_seen: Mutex<std::collections::HashSet<String>>,
    /// The stored image returned for every job (`FACEOFF_SANDBOX_IMAGE`).
    stored: Option<Image>,
    /// Renders at once by this provider (one per app): eight workers rendering 4 MP images at
    /// once held over 500 MiB.
    renders: tokio::sync::Semaphore,
}

/// Sandbox images rendered at once per app.
const CONCURRENT_RENDERS: usize = 2;

impl SandboxProvider {
    pub fn from_config(config: &Config) -> Self {
        let faults = config
            .sandbox_fail
            .iter()
            .map(|entry| match entry.split_once(':') {
                Some((model, "moderated")) => (model.to_string(), Fault::Moderated),
                Some((model, "transient")) => (model.to_string(), Fault::Transient),
                Some((model, _)) => (model.to_string(), Fault::Fail),
                None => (entry.clone(), Fault::Fail),
            })
            .collect();
        let stored = config.sandbox_image.as_deref().and_then(|path| match stored_image(path) {
            Ok(image) => Some(image),
            Err(err) => {
                tracing::error!("FACEOFF_SANDBOX_IMAGE={}: {err:#}; rendering images instead", path.display());
                None
            }
        });
        SandboxProvider {
            latency: config.sandbox_latency,
            faults,
            transient_seen: Mutex::default(),
            stored,
            renders: tokio::sync::Semaphore::new(CONCURRENT_RENDERS),
        }
    }

    fn fault(&self, model: &str) -> Option<&Fault> {
        self.faults.iter().find(|(m, _)| m == model).map(|(_, f)| f)
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[async_trait]
impl Provider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn submit(&self, request: &GenerationRequest) -> Result<Submission, ProviderError> {
        let task_id = format!("sandbox-{}", hex::encode(&input_digest(request)[..12]));
        if self.fault(&request.model) == Some(&Fault::Transient) {
            let first = self.transient_seen.lock().map(|mut seen| seen.insert(task_id.clone())).unwrap_or(false);
            if first {
                return Err(ProviderError::Transient("sandbox: injected transient failure (try again)".into()));
            }
        }
        if request.prompt.contains("#moderate") || self.fault(&request.model) == Some(&Fault::Moderated) {
            return Err(ProviderError::Moderated(
                "sandbox: the prompt was flagged by the simulated safety filter".into(),
            ));
        }
        Ok(Submission { task_id, polling_url: None, cost: None, submitted_at_ms: now_ms() })
    }

    async fn poll(&self, request: &GenerationRequest, submission: &Submission) -> Result<Poll, ProviderError> {
        let elapsed = Duration::from_millis((now_ms() - submission.submitted_at_ms).max(0) as u64);
        if elapsed < self.latency {
            let progress = elapsed.as_secs_f32() / self.latency.as_secs_f32();
            return Ok(Poll::Pending { progress: Some(progress.clamp(0.0, 0.99)) });
        }
        if self.fault(&request.model) == Some(&Fault::Fail) {
            return Ok(Poll::Failed { reason: format!("sandbox: injected failure for {}", request.model) });
        }
        if let Some(image) = &self.stored {
            return Ok(Poll::Ready(image.clone()));
        }
        let (width, height) = rendered_size(request);
        let request = request.clone();
        // A few at a time (`renders`), on the blocking pool: not on the image threads
        // (`storage::images::run`), where a backlog of renders would hold up every thumbnail.
        let _permit =
            self.renders.acquire().await.map_err(|_| ProviderError::Transient("sandbox renderer closed".into()))?;
        let bytes = tokio::task::spawn_blocking(move || render(&request))
            .await
            .map_err(|e| ProviderError::Transient(format!("sandbox renderer stopped: {e}")))?
            .map_err(|e| ProviderError::Fatal(format!("sandbox renderer: {e}")))?;
        Ok(Poll::Ready(Image { bytes, content_type: "image/jpeg".into(), width, height, usage_usd: None }))
    }

    /// A zero-latency sandbox is ready at its first poll: no wait (and no timer) before it.
    fn poll_interval(&self, _attempt: u32) -> Duration {
        if self.latency.is_zero() {
            return Duration::ZERO;
        }
        (self.latency / 8).clamp(Duration::from_millis(10), Duration::from_millis(400))
    }
}

/// Reads the stored image of `FACEOFF_SANDBOX_IMAGE` (its type and size from its header).
fn stored_image(path: &std::path::Path) -> anyhow::Result<Image> {
    use anyhow::Context;
    let bytes = std::fs::read(path).context("reading the file")?;
    let reader = image::ImageReader::new(Cursor::new(&bytes)).with_guessed_format()?;
    let content_type = match reader.format() {
        Some(ImageFormat::Jpeg) => "image/jpeg",
        Some(ImageFormat::Png) => "image/png",
        Some(ImageFormat::WebP) => "image/webp",
        _ => anyhow::bail!("not a JPEG, PNG or WebP image"),
    };
    let (width, height) = reader.into_dimensions().context("reading the image's size")?;
    Ok(Image { bytes: Bytes::from(bytes), content_type: content_type.into(), width, height, usage_usd: None })
}

/// The size [`render`] produces for a request.
pub fn rendered_size(request: &GenerationRequest) -> (u32, u32) {
    (request.width.clamp(64, 4096), request.height.clamp(64, 4096))
}

fn input_digest(request: &GenerationRequest) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [request.prompt.as_bytes(), request.model.as_bytes(), request.endpoint.as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(request.seed.to_le_bytes());
    hasher.update(request.width.to_le_bytes());
    hasher.update(request.height.to_le_bytes());
    hasher.finalize().into()
}

/// Renders the image as JPEG bytes. Pure: the same request gives the same bytes.
pub fn render(request: &GenerationRequest) -> anyhow::Result<Bytes> {
    let (width, height) = rendered_size(request);
    let digest = input_digest(request);
    let byte = |i: usize| f32::from(digest[i % digest.len()]) / 255.0;

    // A small canvas of soft shapes, scaled up: smooth at any size and cheap to compute.
    let (sw, sh) = ((width / 8).max(16), (height / 8).max(16));
    let hue = byte(0) * 360.0;
    let palette = [
        hsl(hue, 0.55, 0.18 + byte(1) * 0.1),
        hsl(hue + 40.0 + byte(2) * 80.0, 0.6, 0.45),
        hsl(hue + 180.0 + byte(3) * 60.0, 0.7, 0.62),
        hsl(hue + 300.0, 0.5, 0.8),
    ];
    let angle = byte(4) * std::f32::consts::TAU;
    let (dx, dy) = (angle.cos(), angle.sin());
    let blobs: Vec<(f32, f32, f32, [f32; 3], f32)> = (0..7)
        .map(|i| {
            let b = 5 + i * 4;
            let color = palette[1 + (digest[b] as usize % 3)];
            (byte(b), byte(b + 1), 0.12 + byte(b + 2) * 0.35, color, 0.35 + byte(b + 3) * 0.45)
        })
        .collect();
    let mut small = RgbImage::new(sw, sh);
    for (x, y, px) in small.enumerate_pixels_mut() {
        let (u, v) = (x as f32 / sw as f32, y as f32 / sh as f32);
        let t = ((u - 0.5) * dx + (v - 0.5) * dy + 0.5).clamp(0.0, 1.0);
        let mut c = mix(palette[0], palette[1], t * 0.7);
        for &(bx, by, radius, color, strength) in &blobs {
            let aspect = sw as f32 / sh as f32;
            let d = (((u - bx) * aspect).powi(2) + (v - by).powi(2)).sqrt() / radius;
            let w = (1.0 - d).clamp(0.0, 1.0);
            c = mix(c, color, w * w * strength);
        }
        // Vignette.
        let r = ((u - 0.5).powi(2) + (v - 0.5).powi(2)).sqrt();
        let shade = 1.0 - (r * r * 0.9).min(0.6);
        *px = Rgb([to_u8(c[0] * shade), to_u8(c[1] * shade), to_u8(c[2] * shade)]);
    }
    // Through `DynamicImage`, whose methods are compiled (and optimized) in the `image` crate: a
    // direct `imageops::resize` call is instantiated here, unoptimized in debug builds, and
    // costs the tests seconds per image.
    let mut img = DynamicImage::ImageRgb8(small).resize_exact(width, height, FilterType::Triangle).into_rgb8();

    // The sandbox mark: a band at the bottom with the model and the prompt.
    let band = (height / 7).max(48);
    let band_start = (height - band) as usize * width as usize * 3;
    for channel in &mut img.as_mut()[band_start..] {
        *channel /= 3;
    }
    let font = text::font()?;
    let size = band as f32 * 0.28;
    let margin = band as f32 * 0.3;
    // The text stops a margin short of the right edge too.
    let max_x = width as f32 - margin;
    text::draw(
        &mut img,
        &font,
        size,
        margin,
        (height - band) as f32 + band as f32 * 0.42,
        max_x,
        &format!("SANDBOX RENDERING · {}", request.model_name),
        [255, 255, 255],
    );
    let prompt: String = request.prompt.chars().filter(|c| !c.is_control()).collect();
    text::draw(
        &mut img,
        &font,
        size * 0.62,
        margin,
        (height - band) as f32 + band as f32 * 0.78,
        max_x,
        &format!("seed {} · {}", request.seed, prompt),
        [210, 206, 230],
    );

    let mut out = Cursor::new(Vec::with_capacity((width * height / 4) as usize));
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, ImageFormat::Jpeg)?;
    Ok(Bytes::from(out.into_inner()))
}

fn hsl(h: f32, s: f32, l: f32) -> [f32; 3] {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    [r + m, g + m, b + m]
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Mode;

    fn request(prompt: &str, seed: u32) -> GenerationRequest {
        GenerationRequest {
            endpoint: "flux-2-pro".into(),
            model: "flux-2".into(),
            model_name: "Flux 2".into(),
            prompt: prompt.into(),
            seed,
            mode: Mode::TwoK,
            aspect_ratio: "4:3".into(),
            width: 640,
            height: 480,
            reference_image: None,
        }
    }

    #[test]
    fn same_inputs_same_bytes_and_a_real_jpeg() {
        let a = render(&request("a portrait in a café", 7)).expect("render");
        let b = render(&request("a portrait in a café", 7)).expect("render");
        assert_eq!(a, b);
        let c = render(&request("a portrait in a café", 8)).expect("render");
        assert_ne!(a, c, "another seed gives another image");
        let decoded = image::load_from_memory(&a).expect("decodes");
        assert_eq!((decoded.width(), decoded.height()), (640, 480));
    }

    #[tokio::test]
    async fn a_stored_image_is_returned_at_once_for_every_job() {
        let dir = std::env::temp_dir().join(format!("faceoff-sandbox-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("stored.png");
        let mut png = Cursor::new(Vec::new());
        RgbImage::new(32, 24).write_to(&mut png, ImageFormat::Png).expect("png");
        std::fs::write(&path, png.get_ref()).expect("write");
        let mut config = Config::for_tests();
        config.sandbox_image = Some(path);
        let sandbox = SandboxProvider::from_config(&config);
        let request = request("anything", 1);
        let submission = sandbox.submit(&request).await.expect("submit");
        match sandbox.poll(&request, &submission).await.expect("poll") {
            Poll::Ready(image) => {
                assert_eq!((image.width, image.height, image.content_type.as_str()), (32, 24, "image/png"));
                assert_eq!(&image.bytes[..], png.get_ref().as_slice());
            }
            other => panic!("not ready at once: {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
