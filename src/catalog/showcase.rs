//! Showcase images of the comparison pages: each use case's showcase prompt, run once through
//! every model's configured provider (the sandbox unless a real one is set up), stored in the
//! object store like any run's images, with a ~800 px wide JPEG for the web.
//!
//! The `showcase_image` row is the claim: whoever inserts it (or takes over a stale or failed
//! claim) generates, so concurrent requests and several instances produce one image. Ready
//! images are cached in memory, so pages stop reading the table once everything is generated.
//! The provider is driven by [`providers::drive`], like a run's jobs; a generation stopped by
//! shutdown gives its claim back.

use std::{
    collections::{HashMap, HashSet},
    io::Cursor,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Catalog, Mode, Model, UseCase};
use crate::{
    providers::{self, DriveLimits, Driven, GenerationRequest, NoHooks, Providers},
    storage::{self, Store},
};

/// Width of the web rendition shown on pages.
pub const WEB_WIDTH: u32 = 800;
/// A claim older than this is considered abandoned (its generator died) and is taken over.
const STALE_CLAIM: &str = "5 minutes";
/// How long to wait before retrying a failed generation, and how often.
const RETRY_AFTER: &str = "1 minute";
const MAX_ATTEMPTS: i32 = 5;
/// After `MAX_ATTEMPTS` failures the page says the image is unavailable, and a generation is
/// tried again this long after the last failure (the provider may be back).
const RETRY_EXHAUSTED_AFTER: &str = "1 hour";
/// Longest time one generation may take.
const GENERATION_DEADLINE: Duration = Duration::from_secs(600);
/// Transient provider failures tolerated in a row before a generation fails.
const MAX_TRANSIENT: u32 = 5;
/// The seed used for every showcase image, so reruns give the same picture.
const SHOWCASE_SEED: u32 = 20_261_127;

/// A generated showcase image, ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct ShowcaseImage {
    /// `/media/...` of the web rendition.
    pub url: String,
    pub width: u32,
    pub height: u32,
    /// The provider that produced it (`sandbox`, `bfl`).
    pub provider: String,
    /// `/media/...` of the original the provider delivered, with its size, when stored (the
    /// comparison viewer loads it once the zoom passes the web rendition).
    pub original: Option<(String, u32, u32)>,
}

impl ShowcaseImage {
    pub fn is_sandbox(&self) -> bool {
        self.provider == "sandbox"
    }
}

/// What a page can show for one model's showcase image.
#[derive(Debug, Clone, PartialEq)]
pub enum Showcase {
    Ready(ShowcaseImage),
    /// Being generated (or about to be): the page says so.
    Pending,
    /// Failed `MAX_ATTEMPTS` times: the page says it is unavailable instead of "generating".
    Unavailable,
}

impl Showcase {
    pub fn image(&self) -> Option<&ShowcaseImage> {
        match self {
            Showcase::Ready(image) => Some(image),
            _ => None,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Showcase::Unavailable)
    }
}

/// (use case slug, model slug, prompt digest)
type ReadyKey = (String, String, String);

/// What generating showcase images needs: the database, the object store and the providers.
/// Cheap to clone.
#[derive(Clone)]
pub struct ShowcaseDeps {
    pub pool: PgPool,
    pub store: Store,
    pub providers: Providers,
}

impl ShowcaseDeps {
    pub fn new(pool: PgPool, store: Store, providers: Providers) -> Self {
        ShowcaseDeps { pool, store, providers }
    }
}

/// In-memory cache of ready showcase images, keyed by (use case, model, prompt digest), and the
/// generation of missing ones.
#[derive(Clone)]
pub struct Showcases {
    deps: ShowcaseDeps,
    /// The process's shutdown: background generations started by pages stop with it.
    shutdown: CancellationToken,
    ready: Arc<Mutex<HashMap<ReadyKey, ShowcaseImage>>>,
    /// Generations started by this process and not finished yet.
    running: Arc<Mutex<HashSet<(String, String)>>>,
}

fn digest(prompt: &str) -> String {
    hex::encode(&Sha256::digest(prompt.as_bytes())[..8])
}

#[derive(sqlx::FromRow)]
struct Row {
    model_slug: String,
    prompt: String,
    status: String,
    attempts: i32,
    /// A failed generation may be tried again (see `claim`).
    retry_due: bool,
    provider: Option<String>,
    media_key: Option<String>,
    width: Option<i32>,
    height: Option<i32>,
    original_key: Option<String>,
    original_width: Option<i32>,
    original_height: Option<i32>,
}

impl Showcases {
    /// Generations started by [`Showcases::images`] stop when `shutdown` is cancelled.
    pub fn new(deps: ShowcaseDeps, shutdown: CancellationToken) -> Self {
        Showcases { deps, shutdown, ready: Arc::default(), running: Arc::default() }
    }

    fn cached(&self, use_case: &UseCase, model: &str) -> Option<ShowcaseImage> {
        let key = (use_case.slug.clone(), model.to_string(), digest(&use_case.showcase_prompt));
        self.ready.lock().ok()?.get(&key).cloned()
    }

    /// The showcase images of `models` for `use_case`. Missing ones are generated in the
    /// background (unless they failed too often recently).
    pub async fn images(&self, use_case: &UseCase, models: &[&Model]) -> Vec<Showcase> {
        let mut out: Vec<Showcase> =
            models.iter().map(|m| self.cached(use_case, &m.slug).map_or(Showcase::Pending, Showcase::Ready)).collect();
        if out.iter().all(|s| s.image().is_some()) {
            return out;
        }
        let missing: Vec<String> =
            models.iter().zip(&out).filter(|(_, s)| s.image().is_none()).map(|(m, _)| m.slug.clone()).collect();
        let rows: Vec<Row> = match sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT s.model_slug, s.prompt, s.status, s.attempts, s.provider, s.media_key, s.width, s.height,
                    s.updated_at < now() - interval '{RETRY_EXHAUSTED_AFTER}' AS retry_due,
                    o.key AS original_key, o.width AS original_width, o.height AS original_height
             FROM showcase_image s
             LEFT JOIN LATERAL (
                 SELECT m.key, m.width, m.height FROM media_object m
                 WHERE m.key LIKE regexp_replace(s.media_key, '[^/]+$', '') || 'original.%'
                 ORDER BY m.key LIMIT 1
             ) o ON s.media_key IS NOT NULL
             WHERE s.use_case_slug = $1 AND s.model_slug = ANY($2)",
        )))
        .bind(&use_case.slug)
        .bind(&missing)
        .fetch_all(&self.deps.pool)
        .await
        {
            Ok(rows) => rows,
            Err(err) => {
                // The page still renders, with placeholders.
                tracing::warn!("reading showcase images: {err}");
                return out;
            }
        };
        for (model, slot) in models.iter().zip(out.iter_mut()) {
            if slot.image().is_some() {
                continue;
            }
            let row = rows.iter().find(|r| r.model_slug == model.slug && r.prompt == use_case.showcase_prompt);
            match row {
                Some(Row {
                    status,
                    media_key: Some(key),
                    width: Some(w),
                    height: Some(h),
                    provider,
                    original_key,
                    original_width,
                    original_height,
                    ..
                }) if status == "ready" => {
                    let original = match (original_key, original_width, original_height) {
                        (Some(k), Some(ow), Some(oh)) if *ow > 0 && *oh > 0 => {
                            Some((format!("/media/{k}"), *ow as u32, *oh as u32))
                        }
                        _ => None,
                    };
                    let image = ShowcaseImage {
                        url: format!("/media/{key}"),
                        width: *w as u32,
                        height: *h as u32,
                        provider: provider.clone().unwrap_or_default(),
                        original,
                    };
                    if let Ok(mut ready) = self.ready.lock() {
                        ready.insert(
                            (use_case.slug.clone(), model.slug.clone(), digest(&use_case.showcase_prompt)),
                            image.clone(),
                        );
                    }
                    *slot = Showcase::Ready(image);
                }
                Some(Row { status, attempts, retry_due, .. }) if status == "failed" && *attempts >= MAX_ATTEMPTS => {
                    *slot = Showcase::Unavailable;
                    if *retry_due {
                        self.spawn_generation(use_case, model);
                    }
                }
                _ => self.spawn_generation(use_case, model),
            }
        }
        out
    }

    /// Starts generating one showcase image in the background unless this process already is
    /// (or is shutting down).
    pub fn spawn_generation(&self, use_case: &UseCase, model: &Model) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let key = (use_case.slug.clone(), model.slug.clone());
        match self.running.lock() {
            Ok(mut running) => {
                if !running.insert(key.clone()) {
                    return;
                }
            }
            Err(_) => return,
        }
        let (use_case, model, this) = (use_case.clone(), model.clone(), self.clone());
        tokio::spawn(async move {
            if let Err(err) = generate(&this.deps, &use_case, &model, &this.shutdown).await {
                tracing::warn!(use_case = %use_case.slug, model = %model.slug, "showcase image: {err:#}");
            }
            if let Ok(mut running) = this.running.lock() {
                running.remove(&key);
            }
        });
    }

    /// Generates every missing showcase image, one after the other (a start-up background task),
    /// until `shutdown` is cancelled.
    pub async fn generate_all(&self, catalog: &Catalog, shutdown: &CancellationToken) {
        for use_case in catalog.use_cases() {
            for model in catalog.models() {
                if shutdown.is_cancelled() {
                    return;
                }
                if self.cached(use_case, &model.slug).is_some() {
                    continue;
                }
                if let Err(err) = generate(&self.deps, use_case, model, shutdown).await {
                    tracing::warn!(use_case = %use_case.slug, model = %model.slug, "showcase image: {err:#}");
                }
            }
        }
    }
}

/// Claims the (use case, model) showcase for this process; false when it is ready, or another
/// process is generating it, or it failed recently (too often: within the last hour).
async fn claim(pool: &PgPool, use_case: &UseCase, model: &Model) -> Result<bool, sqlx::Error> {
    let claimed: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO showcase_image (use_case_slug, model_slug, prompt, status, attempts, claimed_at)
         VALUES ($1, $2, $3, 'pending', 1, now())
         ON CONFLICT (use_case_slug, model_slug) DO UPDATE
         SET prompt = EXCLUDED.prompt, status = 'pending', error = NULL, claimed_at = now(),
             attempts = CASE WHEN showcase_image.prompt = EXCLUDED.prompt THEN showcase_image.attempts + 1 ELSE 1 END
         WHERE showcase_image.prompt <> EXCLUDED.prompt
            OR (showcase_image.status = 'pending' AND showcase_image.claimed_at < now() - interval '{STALE_CLAIM}')
            OR (showcase_image.status = 'failed' AND showcase_image.attempts < {MAX_ATTEMPTS}
                AND showcase_image.updated_at < now() - interval '{RETRY_AFTER}')
            OR (showcase_image.status = 'failed'
                AND showcase_image.updated_at < now() - interval '{RETRY_EXHAUSTED_AFTER}')
         RETURNING attempts"
    )))
    .bind(&use_case.slug)
    .bind(&model.slug)
    .bind(&use_case.showcase_prompt)
    .fetch_optional(pool)
    .await?;
    Ok(claimed.is_some())
}

/// Gives the claim back after a generation stopped by shutdown: the row is claimable at once
/// (by this or another process) and the interrupted attempt does not count.
async fn release(pool: &PgPool, use_case: &UseCase, model: &Model) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE showcase_image SET claimed_at = '-infinity', attempts = greatest(attempts - 1, 0)
         WHERE use_case_slug = $1 AND model_slug = $2 AND prompt = $3 AND status = 'pending'",
    )
    .bind(&use_case.slug)
    .bind(&model.slug)
    .bind(&use_case.showcase_prompt)
    .execute(pool)
    .await?;
    Ok(())
}

/// How a generation that did not fail ended.
enum Produced {
    Ready,
    /// Stopped by `cancel` before the image was stored.
    Stopped,
}

/// Generates, stores and records one showcase image if this process wins the claim; stops
/// (giving the claim back) when `cancel` is cancelled.
pub async fn generate(
    deps: &ShowcaseDeps,
    use_case: &UseCase,
    model: &Model,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    if !claim(&deps.pool, use_case, model).await? {
        return Ok(());
    }
    match produce(deps, use_case, model, cancel).await {
        Ok(Produced::Ready) => Ok(()),
        Ok(Produced::Stopped) => {
            tracing::info!(use_case = %use_case.slug, model = %model.slug, "showcase image: stopped, claim released");
            Ok(release(&deps.pool, use_case, model).await?)
        }
        Err(err) => {
            sqlx::query(
                "UPDATE showcase_image SET status = 'failed', error = $4
                 WHERE use_case_slug = $1 AND model_slug = $2 AND prompt = $3 AND status = 'pending'",
            )
            .bind(&use_case.slug)
            .bind(&model.slug)
            .bind(&use_case.showcase_prompt)
            .bind(format!("{err:#}"))
            .execute(&deps.pool)
            .await?;
            Err(err)
        }
    }
}

async fn produce(
    deps: &ShowcaseDeps,
    use_case: &UseCase,
    model: &Model,
    cancel: &CancellationToken,
) -> anyhow::Result<Produced> {
    let variant = model.default_variant();
    // The same routes as a run's jobs (the sandbox when none is configured).
    let plan = deps.providers.plan(&variant.routes, &variant.endpoint);
    let ratio = if model.supports_aspect_ratio(&use_case.showcase_aspect_ratio) {
        use_case.showcase_aspect_ratio.clone()
    } else {
        model.aspect_ratios.first().cloned().unwrap_or_else(|| "1:1".into())
    };
    let (width, height) = providers::dimensions(&ratio, Mode::TwoK).context("showcase aspect ratio")?;
    let request = GenerationRequest {
        endpoint: variant.endpoint.clone(),
        model: model.slug.clone(),
        model_name: model.name.clone(),
        prompt: use_case.showcase_prompt.clone(),
        seed: SHOWCASE_SEED,
        mode: Mode::TwoK,
        aspect_ratio: ratio,
        width,
        height,
        reference_image: None,
    };
    let span = tracing::info_span!("showcase", use_case = %use_case.slug, model = %model.slug);
    let (driven, route) = providers::drive_routes(
        &plan,
        &request,
        tokio::time::Instant::now() + GENERATION_DEADLINE,
        cancel,
        DriveLimits { max_transient: MAX_TRANSIENT },
        None,
        &mut NoHooks,
    )
    .instrument(span)
    .await?;
    let provider = route.map(|r| r.via).unwrap_or_else(|| "sandbox".into());
    let image = match driven {
        Driven::Image(image) => image,
        Driven::Moderated(reason) => bail!("moderated: {reason}"),
        Driven::Failed(reason) | Driven::Unavailable(reason) => bail!("failed: {reason}"),
        Driven::TimedOut(reason) => bail!("timed out: {reason}"),
        Driven::Stopped => return Ok(Produced::Stopped),
    };

    let base = format!("showcase/{}/{}/{}", use_case.slug, model.slug, digest(&use_case.showcase_prompt));
    let extension = match image.content_type.as_str() {
        "image/png" => "png",
        "image/webp" => "webp",
        _ => "jpg",
    };
    storage::save(
        &deps.pool,
        &deps.store,
        &format!("{base}/original.{extension}"),
        image.bytes.clone(),
        &image.content_type,
        Some((image.width, image.height)),
        None,
    )
    .await?;
    let original = image.bytes.clone();
    let (web, web_width, web_height) = storage::images::run(move || web_rendition(&original, WEB_WIDTH))
        .await
        .context("resizing the showcase image")??;
    let web_key = format!("{base}/w{WEB_WIDTH}.jpg");
    storage::save(&deps.pool, &deps.store, &web_key, web, "image/jpeg", Some((web_width, web_height)), None).await?;
    sqlx::query(
        "UPDATE showcase_image SET status = 'ready', media_key = $4, width = $5, height = $6, provider = $7,
             error = NULL
         WHERE use_case_slug = $1 AND model_slug = $2 AND prompt = $3",
    )
    .bind(&use_case.slug)
    .bind(&model.slug)
    .bind(&use_case.showcase_prompt)
    .bind(&web_key)
    .bind(web_width as i32)
    .bind(web_height as i32)
    .bind(&provider)
    .execute(&deps.pool)
    .await?;
    tracing::info!(use_case = %use_case.slug, model = %model.slug, %provider, "showcase image ready");
    Ok(Produced::Ready)
}

/// A JPEG (quality 82) `width` pixels wide (never upscaled), for pages. CPU-bound: run it in
/// [`storage::images::run`].
pub fn web_rendition(bytes: &[u8], width: u32) -> anyhow::Result<(Bytes, u32, u32)> {
    let img = storage::images::decode(bytes, &storage::images::GENERATED).context("decoding the showcase image")?;
    let img = if img.width() > width {
        let height = ((u64::from(img.height()) * u64::from(width)) / u64::from(img.width())).max(1) as u32;
        img.resize_exact(width, height, image::imageops::FilterType::Lanczos3)
    } else {
        img
    };
    let mut out = Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82);
    img.to_rgb8().write_with_encoder(encoder).context("encoding the showcase image")?;
    Ok((Bytes::from(out.into_inner()), img.width(), img.height()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_rendition_is_800_wide_jpeg_keeping_the_ratio() {
        let img = image::RgbImage::from_fn(1200, 1600, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut png = Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).expect("png");
        let (bytes, w, h) = web_rendition(png.get_ref(), 800).expect("rendition");
        assert_eq!((w, h), (800, 1066));
        let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).expect("jpeg");
        assert_eq!((decoded.width(), decoded.height()), (800, 1066));
    }
}
