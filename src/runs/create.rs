//! Creating a run: validating what the studio form or the JSON API sent, pricing it from the
//! catalog (never from the request), and creating the run, its jobs and one ledger hold per job
//! in one transaction. [`create_run`] is the one function both entry points (and the benchmark) use.

use std::io::Cursor;

use bytes::Bytes;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    catalog::{Catalog, Mode, Model, ModelChoice, Variant},
    jobs::{self, HOLD_GRACE, JOB_DEADLINE, NewJob},
    ledger::{self, LedgerError, Refs},
    providers::dimensions,
    storage::{self, Store},
};

pub const MIN_MODELS: usize = 2;
pub const MAX_MODELS: usize = 4;
pub const MAX_PROMPT_CHARS: usize = 2000;
/// The largest reference image accepted (the upload itself).
pub const MAX_REFERENCE_BYTES: usize = 10 * 1024 * 1024;
/// Reference images larger than this on either side are refused (decoding bombs)...
pub const MAX_REFERENCE_SIDE: u32 = 8192;
/// ...and those larger than this are scaled down before they are stored and sent.
pub const STORED_REFERENCE_SIDE: u32 = 2048;

/// What a user asked for, as typed (form or JSON).
#[derive(Debug, Clone, Default)]
pub struct RunInput {
    pub prompt: String,
    /// `model` or `model:variant`.
    pub models: Vec<String>,
    pub mode: String,
    pub aspect_ratio: String,
    pub seed: String,
}

/// A message for one field of the form (or the API's `error.message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError { field, message: message.into() }
    }
}

/// All the messages of one submission.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|e| e.field == field).map(|e| e.message.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn push(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }
    /// One sentence for the API: "prompt: …; models: …".
    pub fn summary(&self) -> String {
        self.0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
    }
}

/// One chosen model variant with its catalog price for the mode.
#[derive(Debug, Clone)]
pub struct Selection {
    pub model: Model,
    pub variant: Variant,
    pub price: i64,
}

impl Selection {
    pub fn choice(&self) -> ModelChoice {
        self.model.choice(&self.variant)
    }
}

/// Parses `model` / `model:variant` choices against the catalog (no mode check).
pub fn resolve_models(catalog: &Catalog, values: &[String], errors: &mut FieldErrors) -> Vec<(Model, Variant)> {
    let mut out: Vec<(Model, Variant)> = Vec::new();
    for raw in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let (model_slug, variant_slug) = match raw.split_once(':') {
            Some((m, v)) => (m, Some(v)),
            None => (raw, None),
        };
        let Some(model) = catalog.model(model_slug) else {
            errors.push("models", format!("there is no model called {model_slug:?}"));
            continue;
        };
        let variant = match variant_slug {
            Some(slug) => match model.variant(slug) {
                Some(v) => v,
                None => {
                    errors.push("models", format!("{} has no variant called {slug:?}", model.name));
                    continue;
                }
            },
            None => model.default_variant(),
        };
        if out.iter().any(|(m, v)| m.slug == model.slug && v.slug == variant.slug) {
            errors.push("models", format!("{} is chosen twice; choose each model once", model.name));
            continue;
        }
        out.push((model.clone(), variant.clone()));
    }
    out
}

/// The aspect ratios every chosen model supports, in the first model's order (all ratios of the
/// catalog when nothing is chosen).
pub fn common_aspect_ratios(catalog: &Catalog, chosen: &[(Model, Variant)]) -> Vec<String> {
    if chosen.is_empty() {
        let mut all: Vec<String> = Vec::new();
        for model in catalog.models() {
            for ratio in &model.aspect_ratios {
                if !all.contains(ratio) {
                    all.push(ratio.clone());
                }
            }
        }
        return all;
    }
    chosen[0]
        .0
        .aspect_ratios
        .iter()
        .filter(|r| chosen.iter().all(|(m, _)| m.supports_aspect_ratio(r)))
        .cloned()
        .collect()
}

/// A priced selection: what a run of these models in this mode costs.
#[derive(Debug, Clone)]
pub struct Quote {
    pub lines: Vec<Selection>,
    pub total: i64,
}

/// Prices the chosen models in `mode` from the catalog.
pub fn quote(catalog: &Catalog, models: &[String], mode: &str) -> Result<Quote, FieldErrors> {
    let mut errors = FieldErrors::default();
    let chosen = resolve_models(catalog, models, &mut errors);
    let mode = parse_mode(mode, &mut errors);
    check_count(&chosen, &mut errors);
    let lines = price(&chosen, mode, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let total = lines.iter().map(|l| l.price).sum();
    Ok(Quote { lines, total })
}

fn parse_mode(mode: &str, errors: &mut FieldErrors) -> Option<Mode> {
    let mode = if mode.trim().is_empty() { "2k" } else { mode.trim() };
    let parsed = Mode::parse(mode);
    if parsed.is_none() {
        errors.push("mode", "choose 2k or 4k");
    }
    parsed
}

fn check_count(chosen: &[(Model, Variant)], errors: &mut FieldErrors) {
    if errors.get("models").is_none() && !(MIN_MODELS..=MAX_MODELS).contains(&chosen.len()) {
        errors.push("models", format!("choose {MIN_MODELS} to {MAX_MODELS} models (you chose {})", chosen.len()));
    }
}

fn price(chosen: &[(Model, Variant)], mode: Option<Mode>, errors: &mut FieldErrors) -> Vec<Selection> {
    let Some(mode) = mode else { return Vec::new() };
    let mut lines = Vec::new();
    for (model, variant) in chosen {
        match variant.price(mode) {
            Some(price) => lines.push(Selection { model: model.clone(), variant: variant.clone(), price }),
            None => errors.push("mode", format!("{} has no {} mode; choose 1080p / 2k", model.name, mode.label())),
        }
    }
    lines
}

/// A validated reference image, re-encoded (JPEG) and scaled to at most 2048 px per side.
#[derive(Debug, Clone)]
pub struct Reference {
    pub bytes: Bytes,
    pub width: u32,
    pub height: u32,
}

/// Checks an uploaded reference image by decoding it: PNG, JPEG or WebP, at most 10 MB and
/// 8192 px per side. CPU-bound: call it from `spawn_blocking`.
pub fn process_reference(bytes: &[u8]) -> Result<Reference, String> {
    if bytes.len() > MAX_REFERENCE_BYTES {
        return Err("the reference image is larger than 10 MB".into());
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| "the reference image could not be read".to_string())?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP) => {}
        _ => return Err("the reference image must be a PNG, JPEG or WebP file".into()),
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_REFERENCE_SIDE);
    limits.max_image_height = Some(MAX_REFERENCE_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    let mut reader = reader;
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => format!("the reference image is larger than {MAX_REFERENCE_SIDE} px per side"),
        _ => "the reference image is damaged or not a real image".to_string(),
    })?;
    let img = if img.width() > STORED_REFERENCE_SIDE || img.height() > STORED_REFERENCE_SIDE {
        img.resize(STORED_REFERENCE_SIDE, STORED_REFERENCE_SIDE, image::imageops::FilterType::Lanczos3)
    } else {
        img
    };
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&img.to_rgb8())
        .map_err(|_| "the reference image could not be processed".to_string())?;
    Ok(Reference { bytes: Bytes::from(out.into_inner()), width: img.width(), height: img.height() })
}

/// A run ready to be created.
#[derive(Debug, Clone)]
pub struct ValidRun {
    pub prompt: String,
    pub selections: Vec<Selection>,
    pub mode: Mode,
    pub aspect_ratio: String,
    pub seed: u32,
    pub reference: Option<Reference>,
    pub total: i64,
}

/// Validates everything on the server. `reference` is the result of [`process_reference`] on
/// the upload, if one was sent.
pub fn validate(
    catalog: &Catalog,
    input: &RunInput,
    reference: Option<Result<Reference, String>>,
) -> Result<ValidRun, FieldErrors> {
    let mut errors = FieldErrors::default();
    let prompt = input.prompt.trim().to_string();
    let chars = prompt.chars().count();
    if chars == 0 {
        errors.push("prompt", "write a prompt");
    } else if chars > MAX_PROMPT_CHARS {
        errors.push("prompt", format!("the prompt is {chars} characters; the limit is {MAX_PROMPT_CHARS}"));
    } else if prompt.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        errors.push("prompt", "the prompt contains control characters");
    }
    let chosen = resolve_models(catalog, &input.models, &mut errors);
    check_count(&chosen, &mut errors);
    let mode = parse_mode(&input.mode, &mut errors);
    let selections = price(&chosen, mode, &mut errors);

    let aspect_ratio = if input.aspect_ratio.trim().is_empty() { "1:1" } else { input.aspect_ratio.trim() };
    if let Some((model, _)) = chosen.iter().find(|(m, _)| !m.supports_aspect_ratio(aspect_ratio)) {
        errors.push("aspect_ratio", format!("{} does not offer the aspect ratio {aspect_ratio}", model.name));
    } else if dimensions(aspect_ratio, Mode::TwoK).is_none() {
        errors.push("aspect_ratio", format!("{aspect_ratio:?} is not an aspect ratio"));
    }

    let seed = match input.seed.trim() {
        "" => rand::random::<u32>(),
        raw => match raw.parse::<u32>() {
            Ok(seed) => seed,
            Err(_) => {
                errors.push("seed", "the seed must be a whole number from 0 to 4294967295 (or empty for a random one)");
                0
            }
        },
    };

    let reference = match reference {
        None => None,
        Some(Err(message)) => {
            errors.push("reference_image", message);
            None
        }
        Some(Ok(reference)) => {
            if let Some((model, _)) = chosen.iter().find(|(m, _)| !m.image_to_image) {
                errors.push(
                    "reference_image",
                    format!("{} does not accept a reference image; remove it or choose other models", model.name),
                );
            }
            Some(reference)
        }
    };

    match mode {
        Some(mode) if errors.is_empty() => {
            let total = selections.iter().map(|s| s.price).sum();
            Ok(ValidRun { prompt, selections, mode, aspect_ratio: aspect_ratio.to_string(), seed, reference, total })
        }
        _ => Err(errors),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("insufficient credits (need {need}, have {have})")]
    InsufficientCredits { need: i64, have: i64 },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<LedgerError> for CreateError {
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::Db(e) => CreateError::Db(e),
            other => CreateError::Other(other.into()),
        }
    }
}

/// The created (or, for a replayed idempotency key, the existing) run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub run_id: Uuid,
    /// True when the key was used before and no new run was made.
    pub replayed: bool,
}

/// Creates the run, one job per model and one hold per job (`job:{id}:hold`) in one
/// transaction, and wakes the workers. The same `(user, idempotency_key)` gives the same run.
/// Not enough credits creates nothing.
pub async fn create_run(
    pool: &PgPool,
    store: &Store,
    user_id: Uuid,
    run: &ValidRun,
    idempotency_key: &str,
) -> Result<Created, CreateError> {
    if let Some(run_id) = find_by_key(pool, user_id, idempotency_key).await? {
        return Ok(Created { run_id, replayed: true });
    }
    let run_id = Uuid::now_v7();
    let reference_key = format!("runs/{run_id}/reference.jpg");

    let mut tx = crate::db::begin(pool).await?;
    let balance = ledger::balance(&mut *tx, user_id).await?;
    if balance.available < run.total {
        return Err(CreateError::InsufficientCredits { need: run.total, have: balance.available });
    }
    if let Some(reference) = &run.reference {
        storage::save(
            &mut *tx,
            store,
            &reference_key,
            reference.bytes.clone(),
            "image/jpeg",
            Some((reference.width, reference.height)),
            Some(user_id),
        )
        .await?;
    }
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO generation_run (run_id, user_id, prompt, mode, aspect_ratio, seed, reference_key, idempotency_key, total_price)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT ON CONSTRAINT generation_run_user_key_unique DO NOTHING
         RETURNING run_id",
    )
    .bind(run_id)
    .bind(user_id)
    .bind(&run.prompt)
    .bind(run.mode.as_str())
    .bind(&run.aspect_ratio)
    .bind(i64::from(run.seed))
    .bind(run.reference.as_ref().map(|_| reference_key.as_str()))
    .bind(idempotency_key)
    .bind(run.total)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        // A concurrent submission with the same key won the race.
        tx.rollback().await?;
        let run_id = find_by_key(pool, user_id, idempotency_key).await?.ok_or_else(|| {
            CreateError::Other(anyhow::anyhow!("run with key {idempotency_key:?} vanished after a conflict"))
        })?;
        return Ok(Created { run_id, replayed: true });
    }

    let now = OffsetDateTime::now_utc();
    let deadline = now + JOB_DEADLINE;
    let hold_deadline = deadline + HOLD_GRACE;
    let (width, height) = dimensions(&run.aspect_ratio, run.mode).unwrap_or((1024, 1024));
    for (position, selection) in run.selections.iter().enumerate() {
        let job_id = Uuid::now_v7();
        let choice = selection.choice();
        let memo = format!("Run: {} ({}), {}", choice.label(), run.mode.label(), short_prompt(&run.prompt));
        let hold = match ledger::reserve(
            &mut tx,
            user_id,
            selection.price,
            &format!("job:{job_id}:hold"),
            hold_deadline,
            &memo,
            Refs { run_id: Some(run_id), job_id: Some(job_id), ..Refs::default() },
        )
        .await
        {
            Ok(hold) => hold,
            Err(LedgerError::InsufficientCredits { .. }) => {
                tx.rollback().await?;
                let have = ledger::balance(pool, user_id).await?.available;
                return Err(CreateError::InsufficientCredits { need: run.total, have });
            }
            Err(err) => return Err(err.into()),
        };
        jobs::insert(
            &mut tx,
            &NewJob {
                job_id,
                run_id,
                position: position as i16,
                choice,
                provider: selection.model.provider.clone(),
                endpoint: selection.variant.endpoint.clone(),
                width,
                height,
                price: selection.price,
                hold_id: hold.hold_id,
                deadline,
            },
        )
        .await?;
    }
    jobs::notify_queued(&mut *tx).await?;
    tx.commit().await?;
    metrics::counter!("runs_created_total").increment(1);
    Ok(Created { run_id, replayed: false })
}

fn short_prompt(prompt: &str) -> String {
    let first: String = prompt.chars().take(60).collect();
    if prompt.chars().count() > 60 { format!("“{}…”", first.trim_end()) } else { format!("“{first}”") }
}

async fn find_by_key(pool: &PgPool, user_id: Uuid, key: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT run_id FROM generation_run WHERE user_id = $1 AND idempotency_key = $2")
        .bind(user_id)
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// A fresh idempotency key for a form render.
pub fn new_idempotency_key() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Checks a client-supplied idempotency key.
pub fn check_idempotency_key(key: &str) -> Result<&str, String> {
    let key = key.trim();
    if key.is_empty() || key.len() > 200 || key.chars().any(|c| c.is_control()) {
        Err("the idempotency key must be 1–200 printable characters".into())
    } else {
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_images_are_checked_by_decoding() {
        assert!(process_reference(b"not an image at all").is_err());
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
        assert!(process_reference(gif).expect_err("a GIF").contains("PNG, JPEG or WebP"));
        let jpeg = crate::providers::bfl::sample_jpeg(64, 48);
        let ok = process_reference(&jpeg).expect("a real jpeg");
        assert_eq!((ok.width, ok.height), (64, 48));
        // A truncated file with a valid header is refused.
        assert!(process_reference(&jpeg[..jpeg.len() / 3]).is_err());
        let big = crate::providers::bfl::sample_jpeg(3000, 1000);
        let scaled = process_reference(&big).expect("scaled");
        assert_eq!(scaled.width, STORED_REFERENCE_SIDE);
    }
}
