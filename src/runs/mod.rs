//! Runs: one prompt sent to 2–4 models. Creating them ([`create`]: validation, pricing, the
//! reference image, the run with its jobs and holds), reading them, and the views the pages, the
//! live stream and the API show (with the user-facing words for job states). The studio, run
//! pages, live updates and history are in [`pages`]; the JSON API in [`api`]; the fan-out of
//! job notifications to live pages in [`events`].

use serde::Serialize;
use sqlx::{FromRow, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    catalog::Mode,
    jobs::{self, Job, JobStatus},
};

pub mod api;
pub mod create;
pub mod events;
pub mod pages;

pub use create::{CreateError, Created, RunInput, ValidRun, create_run, quote, validate};
pub use events::RunEvents;

/// A run as stored.
#[derive(Debug, Clone, FromRow)]
pub struct Run {
    pub run_id: Uuid,
    pub user_id: Uuid,
    pub prompt: String,
    pub mode: Mode,
    pub aspect_ratio: String,
    pub seed: i64,
    pub reference_key: Option<String>,
    pub total_price: i64,
    pub created_at: OffsetDateTime,
    /// A catalog use case's slug or `other` (None: not said).
    pub use_case: Option<String>,
    /// Results shown as Model A, B… until the owner votes or reveals.
    pub blind: bool,
    /// Blind runs: job positions in display order.
    pub shown_order: Option<Vec<i16>>,
    /// When the owner revealed the names without voting.
    pub revealed_at: Option<OffsetDateTime>,
}

const RUN_COLUMNS: &str = "run_id, user_id, prompt, mode, aspect_ratio, seed, reference_key, total_price, created_at, \
                           use_case, blind, shown_order, revealed_at";

impl Run {
    /// Display label of the `i`-th shown result: "Model A".
    pub fn label(i: usize) -> String {
        format!("Model {}", char::from(b'A' + (i as u8).min(25)))
    }

    /// The jobs in display order (blind runs: the stored shuffled order; others: as chosen).
    pub fn in_shown_order<'a, T>(&self, jobs: &'a [T], position: impl Fn(&T) -> i16) -> Vec<&'a T> {
        match &self.shown_order {
            Some(order) if order.len() == jobs.len() => {
                order.iter().filter_map(|p| jobs.iter().find(|j| position(j) == *p)).collect()
            }
            _ => jobs.iter().collect(),
        }
    }
}

pub async fn find(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Option<Run>, sqlx::Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM generation_run WHERE run_id = $1");
    sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_optional(db).await
}

/// These runs (any order; missing ids are left out).
pub async fn find_many(db: impl PgExecutor<'_>, run_ids: &[Uuid]) -> Result<Vec<Run>, sqlx::Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM generation_run WHERE run_id = ANY($1)");
    sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql)).bind(run_ids).fetch_all(db).await
}

/// A run of `user_id`, or `None` (also when it belongs to someone else: callers answer 404).
pub async fn find_owned(db: impl PgExecutor<'_>, run_id: Uuid, user_id: Uuid) -> Result<Option<Run>, sqlx::Error> {
    Ok(find(db, run_id).await?.filter(|r| r.user_id == user_id))
}

/// A user's runs, newest first.
pub async fn list(db: impl PgExecutor<'_>, user_id: Uuid, limit: i64, offset: i64) -> Result<Vec<Run>, sqlx::Error> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM generation_run WHERE user_id = $1 ORDER BY created_at DESC, run_id DESC LIMIT $2 OFFSET $3"
    );
    sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(limit).bind(offset).fetch_all(db).await
}

/// A page of a user's runs, newest first, after the run `after` (`created_at`, `run_id`) of the
/// previous page (keyset pagination: stable while runs are added, and as fast on page 100 as on
/// page 1).
pub async fn list_after(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<Run>, sqlx::Error> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM generation_run
         WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, run_id) < ($2, $3))
         ORDER BY created_at DESC, run_id DESC LIMIT $4"
    );
    let (at, id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
    sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(at).bind(id).bind(limit).fetch_all(db).await
}

/// Which of these runs have an arena vote.
pub async fn voted(db: impl PgExecutor<'_>, run_ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT run_id FROM arena_vote WHERE run_id = ANY($1)").bind(run_ids).fetch_all(db).await
}

pub async fn count(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM generation_run WHERE user_id = $1").bind(user_id).fetch_one(db).await
}

/// Where a run stands: `pending` while any job is queued or running, then `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Done,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Pending => "pending",
            RunStatus::Done => "done",
        })
    }
}

/// A run with its jobs, as the pages, the live stream and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Run)]
pub struct RunView {
    pub id: Uuid,
    /// The run's page on the site (for a signed-in browser).
    #[schema(example = "/runs/0196f7a0-0000-7000-8000-000000000001")]
    pub url: String,
    pub status: RunStatus,
    pub prompt: String,
    pub mode: Mode,
    pub aspect_ratio: String,
    pub seed: i64,
    /// Credits reserved when the run was submitted: the sum of the jobs' prices.
    pub total_price: i64,
    /// Credits charged so far (delivered images).
    pub charged: i64,
    /// Credits returned (failed, blocked or timed-out jobs).
    pub refunded: i64,
    /// Credits still held by unsettled jobs.
    pub held: i64,
    /// When the run was submitted (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// What the run was for: a catalog use case's slug or `other` (null: not said).
    #[schema(example = "portrait")]
    pub use_case: Option<String>,
    /// A blind run (the arena): until its owner votes or reveals, the jobs are listed in a
    /// random order as "Model A", "Model B"…, without model, variant, per-job price, timing or
    /// id, and their images are served at `/runs/{id}/blind/{letter}`.
    pub blind: bool,
    /// Whether the names are shown (not blind, voted on, or revealed).
    pub revealed: bool,
    /// One job per chosen model, in the order they were chosen (blind runs: in the run's
    /// display order, Model A first).
    pub jobs: Vec<JobView>,
}

/// One model's generation within a run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    pub id: Uuid,
    /// The model's slug.
    #[schema(example = "flux-2")]
    pub model: String,
    /// The variant's slug.
    #[schema(example = "standard")]
    pub variant: String,
    /// `model` or `model:variant`, as the studio form and the API take it.
    #[schema(example = "flux-2")]
    pub choice: String,
    /// The model (and variant) as people read it.
    #[schema(example = "Flux 2")]
    pub name: String,
    pub status: JobStatus,
    /// The status in words.
    #[schema(example = "Done")]
    pub status_label: &'static str,
    /// 0–100.
    #[schema(maximum = 100)]
    pub progress: u32,
    /// Credits reserved for this job.
    pub price: i64,
    /// Credits charged once settled: the price when delivered, 0 otherwise; null while pending.
    pub charged: Option<i64>,
    /// Why the job failed, was blocked or was not charged.
    pub reason: Option<String>,
    /// Shown to the user when the job was not charged.
    pub message: Option<&'static str>,
    /// The image for a signed-in browser (`/media/…`); with an API key use
    /// `GET /api/v1/runs/{id}/jobs/{job_id}/image`.
    pub image_url: Option<String>,
    pub thumb_url: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    /// How long the generation took.
    pub duration_ms: Option<u64>,
    pub duration_label: Option<String>,
    /// While the job is queued: its place in its provider route's queue and the estimated start
    /// (in a run's own view and its live stream; null in lists).
    pub queue: Option<jobs::Wait>,
    /// The route that made (or is making) the image: `adapter:endpoint`, e.g.
    /// `fal:fal-ai/ideogram/v3`; `sandbox:…` when no provider key is configured.
    #[schema(example = "bfl:flux-2-pro")]
    pub route: Option<String>,
    /// The route as people read it.
    #[schema(example = "bfl · flux-2-pro")]
    pub route_label: Option<String>,
}

impl JobView {
    pub fn from_job(job: &Job) -> JobView {
        let status = job.status();
        let choice = job.choice();
        JobView {
            id: job.job_id,
            model: job.model_slug.clone(),
            variant: job.variant_slug.clone(),
            choice: choice.value(),
            name: choice.label(),
            status,
            status_label: status_label(status),
            progress: job.percent(),
            price: job.price,
            charged: job.charged,
            reason: job.reason.clone(),
            message: not_charged_message(status),
            image_url: job.image_url(),
            thumb_url: job.thumb_url(),
            width: job.image_width,
            height: job.image_height,
            duration_ms: job.duration().map(|d| d.as_millis() as u64),
            duration_label: job.duration().map(duration_label),
            queue: None,
            route: job.route.clone(),
            route_label: job.route_label(),
        }
    }

    /// What the page shows under a queued job: "Queued: 3 jobs ahead, about 40 s before it starts".
    pub fn wait_label(&self) -> Option<String> {
        self.queue.as_ref().map(|w| format!("Queued: {}.", w.label))
    }

    pub fn is_pending(&self) -> bool {
        !self.status.is_settled()
    }

    /// The `height` attribute of a thumbnail shown `width` pixels wide, so the page does not jump
    /// while it loads (none when the image's size is unknown).
    pub fn thumb_height(&self, width: i32) -> Option<i32> {
        match (self.width, self.height) {
            (Some(w), Some(h)) if w > 0 && h > 0 => Some(((i64::from(width) * i64::from(h)) / i64::from(w)) as i32),
            _ => None,
        }
    }

    pub fn status_class(&self) -> &'static str {
        match self.status {
            JobStatus::Delivered => "badge-good",
            JobStatus::Queued | JobStatus::Running => "badge-warn",
            _ => "badge-bad",
        }
    }
}

/// What users see for a job's status.
pub fn status_label(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "Queued",
        JobStatus::Running => "Generating",
        JobStatus::Delivered => "Done",
        JobStatus::Failed => "Failed",
        JobStatus::Moderated => "Blocked",
        JobStatus::TimedOut => "Timed out",
    }
}

/// The sentence shown to the user for an unsuccessful job (never charged).
pub fn not_charged_message(status: JobStatus) -> Option<&'static str> {
    match status {
        JobStatus::Moderated => Some("The provider's safety filter blocked this prompt — you were not charged."),
        JobStatus::Failed => Some("The model could not generate this image — you were not charged."),
        JobStatus::TimedOut => Some("The model did not deliver in time — you were not charged."),
        _ => None,
    }
}

/// "2.4 s", "1 min 5 s".
pub fn duration_label(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 { format!("{secs:.1} s") } else { format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60) }
}

impl RunView {
    pub fn build(run: &Run, jobs: &[Job]) -> RunView {
        // A blind run keeps its display order after the reveal (Model A first).
        let jobs: Vec<JobView> = run.in_shown_order(jobs, |j| j.position).into_iter().map(JobView::from_job).collect();
        let pending = jobs.iter().any(JobView::is_pending);
        let charged = jobs.iter().filter_map(|j| j.charged).sum();
        let refunded = jobs.iter().filter(|j| j.status.is_settled()).map(|j| j.price - j.charged.unwrap_or(0)).sum();
        let held = jobs.iter().filter(|j| j.is_pending()).map(|j| j.price).sum();
        RunView {
            id: run.run_id,
            url: format!("/runs/{}", run.run_id),
            status: if pending { RunStatus::Pending } else { RunStatus::Done },
            prompt: run.prompt.clone(),
            mode: run.mode,
            aspect_ratio: run.aspect_ratio.clone(),
            seed: run.seed,
            total_price: run.total_price,
            charged,
            refunded,
            held,
            created_at: run
                .created_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| run.created_at.to_string()),
            use_case: run.use_case.clone(),
            blind: run.blind,
            revealed: true,
            jobs,
        }
    }

    /// The view of a blind run whose names are not revealed yet: nothing in it tells the models
    /// apart. Jobs follow the run's display order and are named "Model A"…; while any job is
    /// pending every job shows the same status and the run's mean progress, and the run shows
    /// its whole price as held (not which image arrived first); per-job prices, charges, timings, reasons, sizes and ids are left out;
    /// images are re-encoded copies at `/runs/{id}/blind/{letter}`, shown only once every job is
    /// settled.
    pub fn masked(run: &Run, jobs: &[Job]) -> RunView {
        let mut view = RunView::build(run, jobs);
        view.revealed = false;
        let pending = view.is_pending();
        let progress = if view.jobs.is_empty() {
            0
        } else {
            view.jobs.iter().map(|j| j.progress).sum::<u32>() / view.jobs.len() as u32
        };
        let shown: Vec<&JobView> = run
            .in_shown_order(&view.jobs, |j| jobs.iter().find(|job| job.job_id == j.id).map_or(-1, |job| job.position));
        let masked: Vec<JobView> = shown
            .into_iter()
            .enumerate()
            .map(|(i, j)| {
                let label = Run::label(i);
                let letter = char::from(b'a' + i as u8);
                let (status, image) = if pending {
                    (JobStatus::Running, None)
                } else {
                    let url =
                        (j.status == JobStatus::Delivered).then(|| format!("/runs/{}/blind/{letter}", run.run_id));
                    (j.status, url)
                };
                JobView {
                    id: Uuid::nil(),
                    model: String::new(),
                    variant: String::new(),
                    choice: String::new(),
                    name: label,
                    status,
                    status_label: if pending { "Generating" } else { status_label(status) },
                    progress: if pending { progress } else { j.progress },
                    price: 0,
                    charged: None,
                    reason: None,
                    message: not_charged_message(status),
                    // History lists show no thumbnail for an unrevealed blind run.
                    image_url: image,
                    thumb_url: None,
                    width: None,
                    height: None,
                    duration_ms: None,
                    duration_label: None,
                    // The queue and the route are per provider: either could tell the model.
                    queue: None,
                    route: None,
                    route_label: None,
                }
            })
            .collect();
        view.jobs = masked;
        if pending {
            // Which price was charged first would tell which model arrived first.
            view.charged = 0;
            view.refunded = 0;
            view.held = run.total_price;
        }
        view
    }

    pub fn is_pending(&self) -> bool {
        self.status == RunStatus::Pending
    }

    /// The page's line while the run is pending: generating once a job runs, waiting before.
    pub fn pending_summary(&self) -> String {
        let doing = if self.jobs.iter().any(|j| j.status == JobStatus::Running) {
            "Generating…"
        } else {
            "Waiting in the queue…"
        };
        format!("{doing} {} credits held.", self.held)
    }

    /// The view its owner may see: masked while a blind run is unvoted and unrevealed.
    pub fn for_owner(run: &Run, jobs: &[Job], voted: bool) -> RunView {
        if run.blind && !voted && run.revealed_at.is_none() {
            RunView::masked(run, jobs)
        } else {
            RunView::build(run, jobs)
        }
    }

    /// Loads a run's view (masked while a blind run is unvoted and unrevealed), with the place
    /// in the queue of each queued job.
    pub async fn load(pool: &sqlx::PgPool, run: &Run) -> Result<RunView, sqlx::Error> {
        let jobs = jobs::for_run(pool, run.run_id).await?;
        let voted = crate::arena::votes::of_run(pool, run).await?.is_some();
        RunView::for_owner(run, &jobs, voted).with_waits(pool, &jobs).await
    }

    /// Adds the place in the queue of each queued job of `jobs` (the jobs this view was built
    /// from). A masked view gets none: the queues are per provider route, so a job's place
    /// could tell its model.
    pub async fn with_waits(self, pool: &sqlx::PgPool, jobs: &[Job]) -> Result<RunView, sqlx::Error> {
        if self.blind && !self.revealed {
            return Ok(self);
        }
        let queued: Vec<Uuid> = jobs.iter().filter(|j| j.status == JobStatus::Queued).map(|j| j.job_id).collect();
        if queued.is_empty() {
            return Ok(self);
        }
        let places = jobs::queue::places(pool, &queued).await?;
        Ok(self.with_places(&places))
    }

    /// Adds these places in the queue (`jobs::queue::places`) to the jobs they name (none to a
    /// masked view).
    pub fn with_places(mut self, places: &[(Uuid, jobs::Wait)]) -> RunView {
        if self.blind && !self.revealed {
            return self;
        }
        for (job_id, wait) in places {
            if let Some(shown) = self.jobs.iter_mut().find(|v| v.id == *job_id) {
                shown.queue = Some(wait.clone());
            }
        }
        self
    }

    /// The view of a run just created, from what the creation statement wrote and counted
    /// (`create::Fresh`): the same answer [`RunView::load`] would give, without reading it back.
    pub fn fresh(fresh: &create::Fresh) -> RunView {
        RunView::for_owner(&fresh.run, &fresh.jobs, false).with_places(&fresh.places)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(run: Uuid, position: i16, slug: &str, name: &str, status: JobStatus, price: i64) -> Job {
        let now = OffsetDateTime::now_utc();
        let settled = status.is_settled();
        Job {
            job_id: Uuid::now_v7(),
            run_id: run,
            position,
            model_slug: slug.into(),
            model_name: name.into(),
            variant_slug: "standard".into(),
            variant_name: "Standard".into(),
            variant_is_default: true,
            provider: "bfl".into(),
            route: None,
            width: 1024,
            height: 1024,
            price,
            hold_id: i64::from(position),
            status,
            attempts: 1,
            progress: Some(if settled { 1.0 } else { 0.5 }),
            reason: (status == JobStatus::Failed).then(|| format!("{slug} broke")),
            image_key: (status == JobStatus::Delivered).then(|| format!("runs/{run}/{slug}.png")),
            thumb_key: None,
            image_width: Some(1024),
            image_height: Some(1024),
            charged: settled.then_some(if status == JobStatus::Delivered { price } else { 0 }),
            started_at: Some(now),
            finished_at: settled.then_some(now),
            created_at: now,
            interactive: true,
            fair_slot: 0,
        }
    }

    fn run(order: Vec<i16>) -> Run {
        Run {
            run_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            prompt: "p".into(),
            mode: Mode::TwoK,
            aspect_ratio: "1:1".into(),
            seed: 1,
            reference_key: None,
            total_price: 38,
            created_at: OffsetDateTime::now_utc(),
            use_case: Some("portrait".into()),
            blind: true,
            shown_order: Some(order),
            revealed_at: None,
        }
    }

    /// The masked view follows the stored order, names only the labels, and carries nothing a
    /// model could be told apart by: no slug, name, price, charge, reason, timing, size or id.
    #[test]
    fn a_masked_view_gives_no_model_away() {
        let r = run(vec![1, 0]);
        let jobs = vec![
            job(r.run_id, 0, "flux-2", "Flux 2", JobStatus::Delivered, 22),
            job(r.run_id, 1, "flux-ultra-1-1", "Flux Ultra 1.1", JobStatus::Running, 16),
        ];
        let view = RunView::masked(&r, &jobs);
        assert!(!view.revealed && view.blind);
        let json = serde_json::to_string(&view).unwrap_or_default();
        for secret in ["flux", "Flux", "broke", "\"price\":22", "\"price\":16", "\"charged\":22"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert_eq!((view.charged, view.refunded, view.held), (0, 0, 38), "no partial charges while pending");
        assert!(view.jobs.iter().all(|j| j.price == 0 && j.charged.is_none() && j.duration_ms.is_none()));
        for j in &jobs {
            assert!(!json.contains(&j.job_id.to_string()));
        }
        // Pending: every job looks the same, no image yet.
        assert!(view.jobs.iter().all(|j| j.status == JobStatus::Running && j.image_url.is_none()));
        assert_eq!(view.jobs.iter().map(|j| j.progress).collect::<Vec<_>>(), vec![75, 75]);

        // Settled: Model A is position 1 (the stored order), images at the neutral address.
        let jobs = vec![
            job(r.run_id, 0, "flux-2", "Flux 2", JobStatus::Delivered, 22),
            job(r.run_id, 1, "flux-ultra-1-1", "Flux Ultra 1.1", JobStatus::Failed, 16),
        ];
        let view = RunView::masked(&r, &jobs);
        assert_eq!(view.jobs[0].name, "Model A");
        assert_eq!(view.jobs[0].status, JobStatus::Failed);
        assert_eq!(view.jobs[1].image_url, Some(format!("/runs/{}/blind/b", r.run_id)));
        let revealed = RunView::build(&r, &jobs);
        assert_eq!(revealed.jobs[0].model, "flux-ultra-1-1", "revealed in the same order");
    }
}
