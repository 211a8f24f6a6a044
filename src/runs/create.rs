//! Creating a run: validating what the studio form or the JSON API sent, pricing it from the
//! catalog (never from the request), checking the reference image, and creating the run, its
//! jobs and one ledger hold per job in one transaction. [`submit`] is the one function both
//! entry points use (the benchmark calls [`create_run`] directly).

use bytes::Bytes;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    catalog::{Catalog, Mode, Model, ModelChoice, Variant},
    config::QueueSettings,
    jobs::{HOLD_GRACE, JOB_DEADLINE, Job, JobStatus, Source, queue},
    ledger::{self, LedgerError},
    providers::dimensions,
    storage::{
        self, Store,
        images::{self, ImageProblem},
    },
};

pub const MIN_MODELS: usize = 2;
pub const MAX_MODELS: usize = 4;
pub const MAX_PROMPT_CHARS: usize = 2000;
/// The use case of a run that fits none of the catalog's.
pub const OTHER_USE_CASE: &str = "other";
/// The largest reference image accepted (the upload itself).
pub const MAX_REFERENCE_BYTES: usize = 10 * 1024 * 1024;
/// Reference images larger than this are scaled down before they are stored and sent (larger
/// than [`images::REFERENCE`] they are refused).
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
    /// A catalog use case's slug, `other`, or empty (not said).
    pub use_case: String,
    /// Show the results as Model A, B… until the owner votes (the arena).
    pub blind: bool,
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
        if !model.is_offered() {
            let successor = model.successor.as_deref().and_then(|s| catalog.model(s)).map(|s| s.name.as_str());
            errors.push(
                "models",
                match successor {
                    Some(name) => format!("{} was retired by its maker; try {name} instead", model.name),
                    None => format!("{} was retired by its maker", model.name),
                },
            );
            continue;
        }
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
        for model in catalog.offered_models() {
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

/// Why the reference image is refused, in words for the form.
fn reference_problem(problem: &ImageProblem) -> String {
    match problem {
        ImageProblem::TooLarge { width, height, max_side, max_pixels } => format!(
            "the reference image is {width}×{height} pixels; it may have at most {} megapixels and {max_side} pixels a side",
            max_pixels / 1_000_000
        ),
        other => format!("the reference image: {other}"),
    }
}

/// Decodes an uploaded reference image (within [`images::REFERENCE`]), scales it to at most
/// 2048 px a side and re-encodes it as JPEG. CPU-bound: run it in [`images::run`]; and only
/// after the cheap checks ([`validate`] reads the header, [`submit`] checks the credits).
pub fn process_reference(bytes: &[u8]) -> Result<Reference, String> {
    if bytes.len() > MAX_REFERENCE_BYTES {
        return Err("the reference image is larger than 10 MB".into());
    }
    let img = images::decode(bytes, &images::REFERENCE).map_err(|p| reference_problem(&p))?;
    // `thumbnail` scales by area averaging without the large float buffers of a filtered resize.
    let img = if img.width() > STORED_REFERENCE_SIDE || img.height() > STORED_REFERENCE_SIDE {
        img.thumbnail(STORED_REFERENCE_SIDE, STORED_REFERENCE_SIDE)
    } else {
        img
    };
    let bytes = images::encode_jpeg(&img, 92).map_err(|_| "the reference image could not be processed".to_string())?;
    Ok(Reference { bytes, width: img.width(), height: img.height() })
}

/// A run ready to be created.
#[derive(Debug, Clone)]
pub struct ValidRun {
    pub prompt: String,
    pub selections: Vec<Selection>,
    pub mode: Mode,
    pub aspect_ratio: String,
    pub seed: u32,
    /// The processed reference image ([`process_reference`]), once [`submit`] has decoded it.
    pub reference: Option<Reference>,
    pub total: i64,
    /// What was asked, as sent ([`fingerprint`]): a retry with the same idempotency key must
    /// ask for the same run.
    pub fingerprint: [u8; 32],
    /// Where it was submitted ([`validate`] says the API; [`submit`] sets it).
    pub source: Source,
    /// The use case said (`other` or a catalog slug).
    pub use_case: Option<String>,
    pub blind: bool,
}

/// The digest of a run request as sent (trimmed text, the models in their order, the seed as
/// typed, the reference image's bytes): equal for a retry of the same submission, different
/// for anything else.
pub fn fingerprint(input: &RunInput, upload: Option<&[u8]>) -> [u8; 32] {
    let or = |value: &str, default: &'static str| {
        if value.trim().is_empty() { default.to_string() } else { value.trim().to_string() }
    };
    let canonical = serde_json::json!({
        "prompt": input.prompt.trim(),
        "models": input.models.iter().map(|m| m.trim()).filter(|m| !m.is_empty()).collect::<Vec<_>>(),
        "mode": or(&input.mode, "2k"),
        "aspect_ratio": or(&input.aspect_ratio, "1:1"),
        "seed": input.seed.trim(),
        "reference": upload.map(|bytes| hex::encode(Sha256::digest(bytes))),
    });
    // Added only when set, so that requests without them keep their earlier fingerprints.
    let mut canonical = canonical;
    if !input.use_case.trim().is_empty() {
        canonical["use_case"] = input.use_case.trim().into();
    }
    if input.blind {
        canonical["blind"] = true.into();
    }
    Sha256::digest(canonical.to_string().as_bytes()).into()
}

/// Validates everything on the server that is cheap to check; an uploaded reference image
/// (`upload`) only by its size and header (format and dimensions), never decoded here.
pub fn validate(catalog: &Catalog, input: &RunInput, upload: Option<&[u8]>) -> Result<ValidRun, FieldErrors> {
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

    let use_case = match input.use_case.trim() {
        "" => None,
        slug if slug == OTHER_USE_CASE || catalog.use_case(slug).is_some() => Some(slug.to_string()),
        _ => {
            errors.push("use_case", "choose one of the listed use cases, or other");
            None
        }
    };

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

    if let Some(bytes) = upload {
        let probed = if bytes.len() > MAX_REFERENCE_BYTES {
            Err("the reference image is larger than 10 MB".to_string())
        } else {
            images::probe(bytes, &images::REFERENCE).map(|_| ()).map_err(|p| reference_problem(&p))
        };
        match probed {
            Err(message) => errors.push("reference_image", message),
            Ok(()) => {
                if let Some((model, _)) = chosen.iter().find(|(m, _)| !m.image_to_image) {
                    errors.push(
                        "reference_image",
                        format!("{} does not accept a reference image; remove it or choose other models", model.name),
                    );
                }
            }
        }
    }

    match mode {
        Some(mode) if errors.is_empty() => {
            let total = selections.iter().map(|s| s.price).sum();
            Ok(ValidRun {
                prompt,
                selections,
                mode,
                aspect_ratio: aspect_ratio.to_string(),
                seed,
                reference: None,
                total,
                fingerprint: fingerprint(input, upload),
                source: Source::Api,
                use_case,
                blind: input.blind,
            })
        }
        _ => Err(errors),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Something the user sent is not acceptable (the messages name the fields).
    #[error("{}", .0.summary())]
    Invalid(FieldErrors),
    #[error("insufficient credits (need {need}, have {have})")]
    InsufficientCredits { need: i64, have: i64 },
    /// The idempotency key names an earlier run that asked for something else.
    #[error(
        "the idempotency key {key:?} was already used for a different run; send the same request to get that run, or a new key for a new run"
    )]
    KeyConflict { key: String, run_id: Uuid },
    /// The user's queue for this source is full: nothing was created.
    #[error(
        "you have {queued} jobs waiting from the {origin} and this run adds {adding}; at most {limit} may wait at once. \
         Try again in about {retry_after} s, when some have started"
    )]
    TooManyJobs { origin: &'static str, queued: i64, adding: i64, limit: u32, retry_after: u64 },
    /// The whole queue is backed up: new API runs are refused for now (the studio still works).
    #[error(
        "the generation queue is backed up (its oldest job has waited {waited} s); new API runs are refused for \
         now; try again in {retry_after} s"
    )]
    Busy { waited: u64, retry_after: u64 },
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

/// Submits a run as the studio form or the API sent it, in the order that keeps refusals cheap:
/// the cheap checks (fields, models, mode, the reference image's size and header); then the
/// credits; only then is the reference image decoded (off the async threads, a few at a time)
/// and the run created. A used idempotency key replays its run (or is a
/// [`CreateError::KeyConflict`] when it named another request) whatever the checks would say
/// now: the creation statement checks the key first, a refused request looks it up before
/// answering, and a request with a reference image looks it up before decoding. A refused run
/// stores nothing.
#[allow(clippy::too_many_arguments)]
pub async fn submit(
    pool: &PgPool,
    store: &Store,
    catalog: &Catalog,
    queue: &QueueSettings,
    source: Source,
    user_id: Uuid,
    input: &RunInput,
    upload: Option<Bytes>,
    idempotency_key: &str,
) -> Result<Created, CreateError> {
    let asked = fingerprint(input, upload.as_deref());
    if upload.is_some()
        && let Some(created) = replay(pool, user_id, idempotency_key, &asked).await?
    {
        return Ok(created);
    }
    let mut valid = match validate(catalog, input, upload.as_deref()) {
        Ok(valid) => valid,
        // A retry of a run accepted before (the catalog may have changed since) gets that run.
        Err(errors) => match replay(pool, user_id, idempotency_key, &asked).await? {
            Some(created) => return Ok(created),
            None => return Err(CreateError::Invalid(errors)),
        },
    };
    valid.source = source;
    if let Some(bytes) = upload {
        // Decoding is the expensive part: refuse a run the wallet cannot pay for before it (the
        // creation checks again, under the lock).
        let available = ledger::balance(pool, user_id).await?.available;
        if available < valid.total {
            return Err(CreateError::InsufficientCredits { need: valid.total, have: available });
        }
        let processed = images::run(move || process_reference(&bytes)).await?;
        valid.reference = Some(processed.map_err(|message| {
            let mut errors = FieldErrors::default();
            errors.push("reference_image", message);
            CreateError::Invalid(errors)
        })?);
    }
    create_new(pool, store, queue, user_id, &valid, idempotency_key).await
}

/// `Retry-After` of a refusal while the queue is backed up.
pub const BUSY_RETRY_AFTER: u64 = 30;

/// The run an idempotency key already names: the same request replays it, another request is a
/// conflict. Runs made before requests were fingerprinted replay whatever was sent.
async fn replay(pool: &PgPool, user_id: Uuid, key: &str, asked: &[u8; 32]) -> Result<Option<Created>, CreateError> {
    match find_by_key(pool, user_id, key).await? {
        None => Ok(None),
        Some((run_id, stored)) => replayed(key, asked, run_id, stored).map(Some),
    }
}

/// The answer to a used idempotency key: the run it made when `asked` is the same request,
/// otherwise a [`CreateError::KeyConflict`].
fn replayed(key: &str, asked: &[u8; 32], run_id: Uuid, stored: Option<Vec<u8>>) -> Result<Created, CreateError> {
    match stored {
        Some(stored) if stored.as_slice() != asked.as_slice() => {
            Err(CreateError::KeyConflict { key: key.to_string(), run_id })
        }
        _ => Ok(Created { run_id, replayed: true, fresh: None }),
    }
}

/// The created (or, for a replayed idempotency key, the existing) run.
#[derive(Debug, Clone)]
pub struct Created {
    pub run_id: Uuid,
    /// True when the key was used before and no new run was made.
    pub replayed: bool,
    /// A new run as the creation statement wrote it (what `POST /api/v1/runs` answers without
    /// reading it back); `None` for a replay.
    pub fresh: Option<Box<Fresh>>,
}

/// A run just created, its jobs, and (when asked for, [`Places::Counted`]) their places in the
/// queue at creation, as `jobs::queue::places` reads them.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub run: super::Run,
    pub jobs: Vec<Job>,
    pub places: Vec<(Uuid, queue::Wait)>,
}

/// Whether the creation statement also counts the new jobs' places in the queue (the API
/// answers with them; the studio shows the run page, which counts them itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Places {
    Counted,
    Skipped,
}

/// Creates the run, one job per model and one hold per job (`job:{id}:hold`) in one
/// statement ([`create_new`]), and wakes the workers (callers other than the benchmark and tests go through
/// [`submit`]). The same `(user, idempotency_key)` with the same request gives the same run;
/// with another request it is a [`CreateError::KeyConflict`]. Not enough credits, or a user's
/// queue for the run's source already full ([`CreateError::TooManyJobs`], checked under a
/// per-user lock), creates nothing and stores nothing; the reference image is stored only once
/// the holds are made. The jobs get their places in the fair queue ([`queue::next_slot`]).
pub async fn create_run(
    pool: &PgPool,
    store: &Store,
    queue_settings: &QueueSettings,
    user_id: Uuid,
    run: &ValidRun,
    idempotency_key: &str,
) -> Result<Created, CreateError> {
    create_new(pool, store, queue_settings, user_id, run, idempotency_key).await
}

/// One job of a new run as `faceoff_create_run` reads it (see its migration).
#[derive(serde::Serialize)]
struct JobRow<'a> {
    job_id: Uuid,
    model_slug: &'a str,
    model_name: &'a str,
    variant_slug: &'a str,
    variant_name: &'a str,
    variant_is_default: bool,
    provider: &'a str,
    endpoint: &'a str,
    width: u32,
    height: u32,
    price: i64,
    routes: Vec<String>,
    usage_markup: Option<f32>,
    memo: String,
}

/// What `faceoff_create_run` answered.
#[derive(sqlx::FromRow)]
struct Outcome {
    outcome: String,
    /// NULL when the run was refused before the count ('busy').
    queued: Option<i64>,
    balance: Option<i64>,
    webhooks: Option<bool>,
    waited: Option<f64>,
    /// 'key_used': the run the key made, and its request's fingerprint.
    existing_run: Option<Uuid>,
    existing_fingerprint: Option<Vec<u8>>,
    /// 'created': when, the first fair slot, the holds in position order.
    run_created_at: Option<OffsetDateTime>,
    first_slot: Option<i64>,
    hold_ids: Option<Vec<i64>>,
    /// 'created' with places asked for: per queued job (see `job_queue_places`).
    place_job_ids: Option<Vec<Uuid>>,
    place_ahead: Option<Vec<i64>>,
    place_started: Option<Vec<i64>>,
    place_span: Option<Vec<f64>>,
}

/// The run, its jobs and their holds in one statement (`faceoff_create_run`, which checks the
/// idempotency key first and calls the ledger's `ledger_reserve_holds`), so a run costs one
/// round trip and one commit; with a reference image the statement runs in a transaction that
/// commits once the image is stored. API runs also get their jobs' places in the queue from the
/// same statement.
async fn create_new(
    pool: &PgPool,
    store: &Store,
    queue_settings: &QueueSettings,
    user_id: Uuid,
    run: &ValidRun,
    idempotency_key: &str,
) -> Result<Created, CreateError> {
    let run_id = Uuid::now_v7();
    let reference_key = format!("runs/{run_id}/reference.jpg");
    let limits = run.source.limits(queue_settings);
    let adding = run.selections.len() as i64;

    let now = OffsetDateTime::now_utc();
    let deadline = now + JOB_DEADLINE;
    let hold_deadline = deadline + HOLD_GRACE;
    let (width, height) = dimensions(&run.aspect_ratio, run.mode).unwrap_or((1024, 1024));
    let jobs: Vec<JobRow> = run
        .selections
        .iter()
        .map(|selection| {
            let choice = selection.choice();
            // A blind run's credit lines name no model (the prices would tell them apart).
            let memo = if run.blind {
                format!("Run (blind), {}, {}", run.mode.label(), short_prompt(&run.prompt))
            } else {
                format!("Run: {} ({}), {}", choice.label(), run.mode.label(), short_prompt(&run.prompt))
            };
            JobRow {
                job_id: Uuid::now_v7(),
                model_slug: &selection.model.slug,
                model_name: &selection.model.name,
                variant_slug: &selection.variant.slug,
                variant_name: &selection.variant.name,
                variant_is_default: choice.is_default,
                provider: &selection.model.provider,
                endpoint: &selection.variant.endpoint,
                width,
                height,
                price: selection.price,
                routes: selection.variant.routes.iter().map(ToString::to_string).collect(),
                usage_markup: selection.model.usage_markup,
                memo,
            }
        })
        .collect();

    let places = if run.source.interactive() { Places::Skipped } else { Places::Counted };
    let shown_order = run.blind.then(|| shuffled_positions(run.selections.len()));
    let statement = sqlx::query_as::<_, Outcome>(
        "SELECT outcome, queued, balance, webhooks, waited, existing_run, existing_fingerprint, run_created_at,
                first_slot, hold_ids, place_job_ids, place_ahead, place_started, place_span
         FROM faceoff_create_run(
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
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
    .bind(&run.fingerprint[..])
    .bind(run.source.as_str())
    .bind(run.use_case.as_deref())
    .bind(run.blind)
    .bind(&shown_order)
    .bind(i64::from(limits.max_queued))
    .bind(deadline)
    .bind(hold_deadline)
    .bind(sqlx::types::Json(&jobs))
    .bind(queue_settings.max_age.map(|age| age.as_secs_f64()))
    .bind((places == Places::Counted).then_some(queue::MAX_COUNTED))
    .bind(queue::RATE_SAMPLE);

    let answer = match &run.reference {
        None => statement.fetch_one(pool).await.map(|outcome| (outcome, None)),
        Some(reference) => {
            // The media row is written before the run that refers to it (a foreign key); the
            // bytes are stored last, after every check, and the transaction commits only once
            // they are.
            let mut tx = crate::db::begin(pool).await?;
            storage::record(
                &mut *tx,
                &reference_key,
                "image/jpeg",
                reference.bytes.len(),
                Some((reference.width, reference.height)),
                Some(user_id),
            )
            .await?;
            statement.fetch_one(&mut *tx).await.map(|outcome| (outcome, Some(tx)))
        }
    };
    let (outcome, tx) = match answer {
        Ok(answer) => answer,
        // The wallet was spent concurrently between the check and the holds (the statement
        // undid itself).
        Err(sqlx::Error::Database(e)) if e.message() == "insufficient credits" => {
            let have = ledger::balance(pool, user_id).await?.available;
            return Err(CreateError::InsufficientCredits { need: run.total, have });
        }
        Err(e) => return Err(e.into()),
    };
    match outcome.outcome.as_str() {
        "created" => {}
        "busy" => {
            let waited = outcome.waited.unwrap_or(0.0).max(0.0) as u64;
            return Err(CreateError::Busy { waited, retry_after: BUSY_RETRY_AFTER });
        }
        "too_many_jobs" => {
            let queued = outcome.queued.unwrap_or(0);
            let excess = (queued + adding - i64::from(limits.max_queued)) as f64;
            let retry_after = match queue::start_rate(pool, None).await? {
                Some(rate) => (excess / rate).ceil().clamp(1.0, 600.0) as u64,
                None => 30,
            };
            return Err(CreateError::TooManyJobs {
                origin: if run.source.interactive() { "studio" } else { "API" },
                queued,
                adding,
                limit: limits.max_queued,
                retry_after,
            });
        }
        "insufficient_credits" => {
            return Err(CreateError::InsufficientCredits { need: run.total, have: outcome.balance.unwrap_or(0) });
        }
        "key_used" => {
            // The key was used before (or by a concurrent submission that won the race).
            let Some(existing) = outcome.existing_run else {
                return Err(CreateError::Other(anyhow::anyhow!(
                    "run with key {idempotency_key:?} vanished after a conflict"
                )));
            };
            return replayed(idempotency_key, &run.fingerprint, existing, outcome.existing_fingerprint);
        }
        other => return Err(CreateError::Other(anyhow::anyhow!("faceoff_create_run answered {other:?}"))),
    }
    if let (Some(reference), Some(tx)) = (&run.reference, tx) {
        store.put(&reference_key, reference.bytes.clone()).await?;
        tx.commit().await?;
    }
    // Committed: wake the workers.
    crate::jobs::announce_queued(pool);
    // `credits.low` for webhook endpoints whose threshold this run crossed (never fails the run;
    // recorded just after it).
    if outcome.webhooks == Some(true) {
        let before = outcome.balance.unwrap_or(0);
        let mut tx = crate::db::begin(pool).await?;
        crate::webhooks::outbox::credits_spent(&mut tx, user_id, before, before - run.total).await;
        tx.commit().await?;
    }
    metrics::counter!("runs_created_total").increment(1);
    let fresh = written(user_id, run_id, run, &jobs, &outcome, reference_key, shown_order);
    Ok(Created { run_id, replayed: false, fresh: fresh.map(Box::new) })
}

/// The run and jobs `faceoff_create_run` wrote, as [`super::find`] and [`jobs::for_run`] would
/// read them back (the columns the statement leaves to their defaults are a new job's), with the
/// places it counted. `None` if the statement did not say what only it knows.
fn written(
    user_id: Uuid,
    run_id: Uuid,
    run: &ValidRun,
    jobs: &[JobRow<'_>],
    outcome: &Outcome,
    reference_key: String,
    shown_order: Option<Vec<i16>>,
) -> Option<Fresh> {
    let created_at = outcome.run_created_at?;
    let first_slot = outcome.first_slot?;
    let holds = outcome.hold_ids.as_deref()?;
    let interactive = run.source.interactive();
    let stored = super::Run {
        run_id,
        user_id,
        prompt: run.prompt.clone(),
        mode: run.mode,
        aspect_ratio: run.aspect_ratio.clone(),
        seed: i64::from(run.seed),
        reference_key: run.reference.as_ref().map(|_| reference_key),
        total_price: run.total,
        created_at,
        use_case: run.use_case.clone(),
        blind: run.blind,
        shown_order,
        revealed_at: None,
    };
    let rows = jobs
        .iter()
        .zip(holds)
        .enumerate()
        .map(|(position, (row, &hold_id))| Job {
            job_id: row.job_id,
            run_id,
            position: position as i16,
            model_slug: row.model_slug.to_string(),
            model_name: row.model_name.to_string(),
            variant_slug: row.variant_slug.to_string(),
            variant_name: row.variant_name.to_string(),
            variant_is_default: row.variant_is_default,
            provider: row.provider.to_string(),
            route: None,
            width: row.width as i32,
            height: row.height as i32,
            price: row.price,
            hold_id,
            status: JobStatus::Queued,
            attempts: 0,
            progress: None,
            reason: None,
            image_key: None,
            thumb_key: None,
            image_width: None,
            image_height: None,
            charged: None,
            started_at: None,
            finished_at: None,
            created_at,
            interactive,
            fair_slot: if interactive { first_slot } else { first_slot + position as i64 },
        })
        .collect();
    let places = match (&outcome.place_job_ids, &outcome.place_ahead, &outcome.place_started, &outcome.place_span) {
        (Some(ids), Some(ahead), Some(started), Some(span)) => ids
            .iter()
            .zip(ahead)
            .zip(started.iter().zip(span))
            .map(|((&id, &ahead), (&started, &span))| (id, queue::Wait::new(ahead, queue::rate(started, Some(span)))))
            .collect(),
        _ => Vec::new(),
    };
    Some(Fresh { run: stored, jobs: rows, places })
}

/// The display order of a blind run: the job positions in a random order (Model A is
/// `order[0]`).
fn shuffled_positions(n: usize) -> Vec<i16> {
    use rand::seq::SliceRandom;
    let mut order: Vec<i16> = (0..n as i16).collect();
    order.shuffle(&mut rand::rng());
    order
}

fn short_prompt(prompt: &str) -> String {
    let first: String = prompt.chars().take(60).collect();
    if prompt.chars().count() > 60 { format!("“{}…”", first.trim_end()) } else { format!("“{first}”") }
}

/// The run of `user_id` made with `key`, and the fingerprint of its request.
async fn find_by_key(pool: &PgPool, user_id: Uuid, key: &str) -> Result<Option<(Uuid, Option<Vec<u8>>)>, sqlx::Error> {
    sqlx::query_as("SELECT run_id, request_fingerprint FROM generation_run WHERE user_id = $1 AND idempotency_key = $2")
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

    fn input() -> RunInput {
        RunInput {
            prompt: "a red kite over the dunes".into(),
            models: vec!["flux-2".into(), "flux-2:klein-9b".into()],
            mode: "2k".into(),
            aspect_ratio: "1:1".into(),
            seed: String::new(),
            ..RunInput::default()
        }
    }

    #[test]
    fn a_bomb_is_refused_from_its_header_before_any_decoding() {
        let catalog = crate::catalog::file::parse(crate::catalog::CATALOG_TOML).expect("catalog");
        let bomb = crate::storage::images::tests::png_bomb(8192);
        let errors = validate(&catalog, &input(), Some(&bomb)).expect_err("refused");
        let message = errors.get("reference_image").expect("a reference error");
        assert!(message.contains("8192×8192"), "{message}");
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint_and_another_does_not() {
        let a = input();
        let mut spaced = a.clone();
        spaced.prompt = format!("  {}  ", a.prompt);
        spaced.mode = String::new();
        assert_eq!(fingerprint(&a, None), fingerprint(&spaced, None), "trimmed and defaulted like validation");
        for change in [
            |i: &mut RunInput| i.prompt.push('!'),
            |i: &mut RunInput| i.models.reverse(),
            |i: &mut RunInput| i.mode = "4k".into(),
            |i: &mut RunInput| i.aspect_ratio = "16:9".into(),
            |i: &mut RunInput| i.seed = "42".into(),
        ] {
            let mut other = a.clone();
            change(&mut other);
            assert_ne!(fingerprint(&a, None), fingerprint(&other, None), "{other:?}");
        }
        assert_ne!(fingerprint(&a, Some(b"one image")), fingerprint(&a, Some(b"another image")));
        assert_ne!(fingerprint(&a, None), fingerprint(&a, Some(b"one image")));
    }
}
