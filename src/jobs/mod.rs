//! Generation jobs: the queue in PostgreSQL, the workers that claim jobs with a lease, call a
//! provider, store the image and settle the ledger hold exactly once.
//!
//! - A job is claimed in one short statement (`FOR UPDATE SKIP LOCKED`) that sets a fresh
//!   `lease_token` and bumps `attempts`; no transaction stays open during provider calls.
//! - The worker keeps the lease alive with heartbeats. When a worker dies its lease expires and
//!   the job becomes claimable again; the provider task recorded in `submission` (written before
//!   the first poll) lets the next worker resume polling instead of paying for a second task.
//! - Every write by a worker is fenced by its lease token, so a worker that comes back late can
//!   neither record nor settle a job someone else owns or finished; the settle update and the
//!   hold's post/void commit together, and a settled job never changes again (a trigger).
//! - Job changes are announced with `NOTIFY` ([`CHANNEL_UPDATED`], payload = run id) for the live
//!   run pages; new jobs with [`CHANNEL_QUEUED`] to wake idle workers (polling is the fallback).
//!   The hot paths (a run's creation, a job's submission, progress and settlement) announce once
//!   they have committed ([`announce_updated`], [`announce_queued`]), not inside their
//!   transaction: see `db::notifications::announce` for why.

use std::time::Duration;

use serde::Serialize;
use sqlx::{FromRow, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    catalog::ModelChoice,
    ledger::{HoldStatus, LedgerError},
    providers::{Mode, Submission},
};

pub mod queue;
mod worker;

pub use queue::{RunningLimits, Source, Wait};
pub use worker::{Engine, WorkerOptions, spawn_workers};

/// Channel announcing new (or released) jobs; workers listen to it.
pub const CHANNEL_QUEUED: &str = "faceoff_job_queued";
/// Channel announcing job changes; the payload is the run id.
pub const CHANNEL_UPDATED: &str = "faceoff_job_updated";
/// How long a job may take from submission to result before it is given up (and not charged).
pub const JOB_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// Holds outlive their job's deadline by this much, so the hold sweeper never races a worker.
pub const HOLD_GRACE: Duration = Duration::from_secs(20 * 60);

/// A job's `status` column (`generation_job_status_check`). sqlx decodes the text directly; a
/// value not listed here is a decode error, never a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Delivered,
    Failed,
    Moderated,
    TimedOut,
}

impl JobStatus {
    /// The database (and JSON) spelling, e.g. for metrics labels and `data-status`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Delivered => "delivered",
            JobStatus::Failed => "failed",
            JobStatus::Moderated => "moderated",
            JobStatus::TimedOut => "timed_out",
        }
    }

    pub fn is_settled(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// Wakes idle workers (delivered when the caller's transaction commits).
pub async fn notify_queued(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL_QUEUED).execute(db).await?;
    Ok(())
}

/// Wakes idle workers once the caller's change has committed (through the pool's announcer:
/// `db::notifications::announce`; the hot paths use it, rare ones notify in their transaction).
pub fn announce_queued(pool: &PgPool) {
    crate::db::notifications::announce(pool, CHANNEL_QUEUED, String::new());
}

/// Tells live run pages that a job of `run_id` changed, once that change has committed.
pub fn announce_updated(pool: &PgPool, run_id: Uuid) {
    crate::db::notifications::announce(pool, CHANNEL_UPDATED, run_id.to_string());
}

/// A job as the run pages and the API show it.
#[derive(Debug, Clone, FromRow)]
pub struct Job {
    pub job_id: Uuid,
    pub run_id: Uuid,
    pub position: i16,
    pub model_slug: String,
    pub model_name: String,
    pub variant_slug: String,
    pub variant_name: String,
    pub variant_is_default: bool,
    pub provider: String,
    /// The route that made (or is making) the image, `via:endpoint` (`sandbox:…` offline).
    pub route: Option<String>,
    pub width: i32,
    pub height: i32,
    pub price: i64,
    pub hold_id: i64,
    pub status: JobStatus,
    pub attempts: i32,
    pub progress: Option<f32>,
    pub reason: Option<String>,
    pub image_key: Option<String>,
    pub thumb_key: Option<String>,
    pub image_width: Option<i32>,
    pub image_height: Option<i32>,
    pub charged: Option<i64>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub interactive: bool,
    pub fair_slot: i64,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// How long the generation took, from the first claim to the result.
    pub fn duration(&self) -> Option<Duration> {
        let (start, end) = (self.started_at?, self.finished_at?);
        let d = end - start;
        Some(Duration::from_millis(d.whole_milliseconds().max(0) as u64))
    }

    pub fn image_url(&self) -> Option<String> {
        self.image_key.as_ref().map(|k| format!("/media/{k}"))
    }

    pub fn thumb_url(&self) -> Option<String> {
        self.thumb_key.as_ref().or(self.image_key.as_ref()).map(|k| format!("/media/{k}"))
    }

    /// The model and variant of the job.
    pub fn choice(&self) -> ModelChoice {
        ModelChoice {
            model_slug: self.model_slug.clone(),
            model_name: self.model_name.clone(),
            variant_slug: self.variant_slug.clone(),
            variant_name: self.variant_name.clone(),
            is_default: self.variant_is_default,
        }
    }

    /// The route as people read it: "fal · fal-ai/ideogram/v3", "sandbox".
    pub fn route_label(&self) -> Option<String> {
        let route = self.route.as_deref()?;
        Some(match route.split_once(':') {
            Some(("sandbox", _)) => "sandbox (offline)".to_string(),
            Some((via, endpoint)) => format!("{via} · {endpoint}"),
            None => route.to_string(),
        })
    }

    /// Progress as a whole percentage for the progress bar.
    pub fn percent(&self) -> u32 {
        match self.status() {
            JobStatus::Delivered => 100,
            JobStatus::Running => (self.progress.unwrap_or(0.0).clamp(0.0, 1.0) * 100.0).round() as u32,
            _ => 0,
        }
    }
}

const JOB_COLUMNS: &str =
    "job_id, run_id, position, model_slug, model_name, variant_slug, variant_name, variant_is_default, provider, route, width,
    height, price, hold_id, status, attempts, progress, reason, image_key, thumb_key, image_width, image_height,
    charged, started_at, finished_at, created_at, interactive, fair_slot";

/// The queue as an operator watches it (`/metrics`): jobs waiting and how long the oldest has
/// waited since its run was submitted, jobs running, and running jobs whose lease ran out (a
/// worker died; they are claimed again).
#[derive(Debug, Clone, Copy, PartialEq, FromRow)]
pub struct QueueStats {
    pub queued: i64,
    pub oldest_queued_seconds: f64,
    pub running: i64,
    pub lease_expired: i64,
}

/// Reads [`QueueStats`] (partial indexes on queued and running jobs keep it cheap).
pub async fn queue_stats(db: impl PgExecutor<'_>) -> Result<QueueStats, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'queued')), 0)::float8
                    AS oldest_queued_seconds,
                count(*) FILTER (WHERE status = 'running') AS running,
                count(*) FILTER (WHERE status = 'running' AND lease_expires_at < now()) AS lease_expired
         FROM generation_job WHERE status IN ('queued', 'running')",
    )
    .fetch_one(db)
    .await
}

/// The jobs of a run, in the order the models were chosen.
pub async fn for_run(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Vec<Job>, sqlx::Error> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM generation_job WHERE run_id = $1 ORDER BY position");
    sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_all(db).await
}

/// The jobs of several runs (history pages), ordered by run then position.
pub async fn for_runs(db: impl PgExecutor<'_>, run_ids: &[Uuid]) -> Result<Vec<Job>, sqlx::Error> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM generation_job WHERE run_id = ANY($1) ORDER BY run_id, position");
    sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql)).bind(run_ids).fetch_all(db).await
}

/// A job claimed by a worker, with everything needed to run it.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedJob {
    pub job_id: Uuid,
    pub run_id: Uuid,
    pub user_id: Uuid,
    pub model_slug: String,
    pub model_name: String,
    pub variant_slug: String,
    pub variant_name: String,
    pub variant_is_default: bool,
    pub provider: String,
    pub endpoint: String,
    /// `via:endpoint` each, in order.
    pub routes: Vec<String>,
    /// The route of the recorded `submission`.
    pub route: Option<String>,
    pub usage_markup: Option<f32>,
    pub width: i32,
    pub height: i32,
    pub price: i64,
    pub hold_id: i64,
    pub deadline: OffsetDateTime,
    pub attempts: i32,
    pub lease_token: Uuid,
    pub provider_impl: Option<String>,
    pub submission: Option<sqlx::types::Json<Submission>>,
    pub prompt: String,
    pub seed: i64,
    pub mode: Mode,
    pub aspect_ratio: String,
    pub reference_key: Option<String>,
    /// The run is blind (the arena): nothing the provider draws may name the model.
    pub blind: bool,
}

impl ClaimedJob {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The model and variant of the job.
    pub fn choice(&self) -> ModelChoice {
        ModelChoice {
            model_slug: self.model_slug.clone(),
            model_name: self.model_name.clone(),
            variant_slug: self.variant_slug.clone(),
            variant_name: self.variant_name.clone(),
            is_default: self.variant_is_default,
        }
    }
}

/// Claims the next runnable job: first a running job whose lease expired (its worker died),
/// else the first queued job in fair order ([`queue`]) whose user is under their running limit
/// for its source, looking at most [`queue::CLAIM_WINDOW`] entries of the fair index ahead.
/// Jobs of providers in `skip_providers` (at their concurrency limit) are left alone. No
/// running limits: [`claim_with`] with [`RunningLimits::NONE`].
pub async fn claim(
    pool: &PgPool,
    lease: Duration,
    skip_providers: &[String],
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    claim_with(pool, lease, skip_providers, RunningLimits::NONE).await
}

/// The claim, one statement ($1 lease token, $2 lease seconds, $3 providers to skip, $4/$5 the
/// studio/API running limits, $6 the window): `faceoff_claim_job` (see its migrations) takes a
/// running job whose lease expired (its worker died) if there is one, else the first queued job
/// in fair order whose user is under their running limit, with a fresh lease, and returns it
/// with its run's inputs (one round trip and one commit per claim). The function keeps the plan
/// on the fair index however stale the table's statistics are.
///
/// Nothing may be read here outside the function: this statement's snapshot is older than the
/// one the function's query claims with, so a run committed in between would be invisible out
/// here while its job was claimed in there (claimed, answered "nothing", and left `running`
/// until its lease expired). Public for the benchmark's `EXPLAIN` (`cargo bench --bench
/// queue`; the function's own plan shows with `auto_explain`).
pub const CLAIM_SQL: &str = "SELECT * FROM faceoff_claim_job($1, $2, $3, $4, $5, $6)";

/// [`claim`] with per-user running limits (the workers pass the configured ones). The limit is
/// read without a lock: claims racing for one user may exceed it by the number of concurrent
/// claims.
pub async fn claim_with(
    pool: &PgPool,
    lease: Duration,
    skip_providers: &[String],
    limits: RunningLimits,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    sqlx::query_as::<_, ClaimedJob>(CLAIM_SQL)
        .bind(Uuid::new_v4())
        .bind(lease.as_secs_f64())
        .bind(skip_providers)
        .bind(i64::from(limits.studio))
        .bind(i64::from(limits.api))
        .bind(queue::CLAIM_WINDOW)
        .fetch_optional(pool)
        .await
}

/// Extends the lease; `false` when the job is no longer ours (lease lost or job settled).
pub async fn heartbeat(pool: &PgPool, job: &ClaimedJob, lease: Duration) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE generation_job SET lease_expires_at = now() + make_interval(secs => $3)
         WHERE job_id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the provider task, and the route that accepted it, before polling it, and announces
/// the change; `false` when the lease was lost.
pub async fn record_submission(
    pool: &PgPool,
    job: &ClaimedJob,
    provider_impl: &str,
    route: &str,
    submission: &Submission,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query(
        "UPDATE generation_job SET provider_impl = $3, submission = $4, progress = 0, route = $5
         WHERE job_id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(provider_impl)
    .bind(sqlx::types::Json(submission))
    .bind(route)
    .execute(pool)
    .await?;
    let recorded = recorded.rows_affected() == 1;
    if recorded {
        announce_updated(pool, job.run_id);
    }
    Ok(recorded)
}

/// Records progress (0–1) and announces it; `false` when the lease was lost.
pub async fn record_progress(pool: &PgPool, job: &ClaimedJob, progress: f32) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query(
        "UPDATE generation_job SET progress = $3 WHERE job_id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(progress)
    .execute(pool)
    .await?;
    let recorded = recorded.rows_affected() == 1;
    if recorded {
        announce_updated(pool, job.run_id);
    }
    Ok(recorded)
}

/// Gives a job back to the queue (the worker is shutting down): the next worker resumes it at once.
pub async fn release(pool: &PgPool, job: &ClaimedJob) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let done = sqlx::query(
        "UPDATE generation_job SET status = 'queued', lease_token = NULL, lease_expires_at = NULL, run_after = now()
         WHERE job_id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .execute(&mut *tx)
    .await?;
    notify_queued(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `usage_usd`: what the provider reported the image cost (usage-billed models).
    Delivered {
        image_key: String,
        thumb_key: Option<String>,
        width: u32,
        height: u32,
        usage_usd: Option<f64>,
        /// The objects stored for it (the image, its thumbnail), recorded in `media_object`
        /// (owned by the run's user) when the job settles.
        media: Vec<NewMedia>,
    },
    Failed(String),
    Moderated(String),
    TimedOut(String),
}

impl Outcome {
    fn status(&self) -> JobStatus {
        match self {
            Outcome::Delivered { .. } => JobStatus::Delivered,
            Outcome::Failed(_) => JobStatus::Failed,
            Outcome::Moderated(_) => JobStatus::Moderated,
            Outcome::TimedOut(_) => JobStatus::TimedOut,
        }
    }
}

/// An object stored in the object store, to record in `media_object` when its job settles.
#[derive(Debug, Clone, Serialize)]
pub struct NewMedia {
    pub key: String,
    pub content_type: String,
    pub byte_size: i64,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

/// What [`settle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The job is settled now: `charged` credits were posted (0 when the hold was voided).
    Done { charged: i64 },
    /// Someone else owns or finished the job; nothing was changed.
    LostLease,
}

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Why a delivered job is free: the sweeper voided its hold first (its deadline passed).
const LATE_DELIVERY: &str = "delivered after the hold expired; not charged";

/// What `faceoff_settle_job` answered.
#[derive(Debug, FromRow)]
struct SettleAnswer {
    outcome: String,
    charged: Option<i64>,
}

/// Settles a job exactly once, fenced by its lease token: the delivered image's media rows, the
/// job's final state and the hold's post (delivered) or void (anything else) commit together.
/// One statement and one commit (`faceoff_settle_job`, which resolves the hold with
/// `ledger_resolve_hold`: the same rows as [`crate::ledger::post`] and
/// [`crate::ledger::void`]); for a user with webhook endpoints it runs in a transaction that also
/// writes the outbox rows.
pub async fn settle(pool: &PgPool, job: &ClaimedJob, outcome: &Outcome) -> Result<Settled, SettleError> {
    let name = job.choice().label();
    let status = outcome.status();
    let (charge, memo, reason) = match outcome {
        Outcome::Delivered { usage_usd, .. } => {
            let charge = charge_for(job.price, job.usage_markup, *usage_usd);
            let memo = if charge < job.price {
                format!("{name}: image delivered (billed by usage, {charge} of {} credits held)", job.price)
            } else {
                format!("{name}: image delivered")
            };
            (Some(charge), memo, None)
        }
        Outcome::Failed(why) | Outcome::Moderated(why) | Outcome::TimedOut(why) => {
            (None, format!("{name}: not charged ({})", short(why)), Some(why.as_str()))
        }
    };
    let (image_key, thumb_key, size, media) = match outcome {
        Outcome::Delivered { image_key, thumb_key, width, height, media, .. } => {
            (Some(image_key.as_str()), thumb_key.as_deref(), Some((*width as i32, *height as i32)), media.as_slice())
        }
        _ => (None, None, None, &[][..]),
    };
    let statement = |outbox: bool| {
        sqlx::query_as::<_, SettleAnswer>(
            "SELECT outcome, charged FROM faceoff_settle_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(job.job_id)
        .bind(job.lease_token)
        .bind(status)
        .bind(reason)
        .bind(charge)
        .bind(&memo)
        .bind(image_key)
        .bind(thumb_key)
        .bind(size.map(|s| s.0))
        .bind(size.map(|s| s.1))
        .bind(sqlx::types::Json(media))
        .bind(LATE_DELIVERY)
        .bind(outbox)
    };
    let answer = statement(false).fetch_one(pool).await.map_err(|err| ledger_error(err, job.hold_id))?;
    let answer = match answer.outcome.as_str() {
        "webhooks" => {
            // Webhook events (`job.failed`, `run.completed`) as small rows in the settlement's
            // transaction; they cannot fail it (a savepoint) and are delivered in the background.
            let mut tx = crate::db::begin(pool).await?;
            let answer = statement(true).fetch_one(&mut *tx).await.map_err(|err| ledger_error(err, job.hold_id))?;
            if answer.outcome == "settled" {
                crate::webhooks::outbox::job_settled(
                    &mut tx,
                    job.user_id,
                    job.run_id,
                    job.job_id,
                    status == JobStatus::Delivered,
                )
                .await;
                tx.commit().await?;
            }
            answer
        }
        _ => answer,
    };
    match answer.outcome.as_str() {
        "settled" => {
            announce_updated(pool, job.run_id);
            Ok(Settled::Done { charged: answer.charged.unwrap_or(0) })
        }
        "lost_lease" => Ok(Settled::LostLease),
        other => Err(SettleError::Db(sqlx::Error::Protocol(format!("faceoff_settle_job answered {other:?}")))),
    }
}

/// The ledger's refusals raised by `faceoff_settle_job` (the `HINT` names them) as
/// [`LedgerError`]s; any other error as it is.
fn ledger_error(err: sqlx::Error, hold_id: i64) -> SettleError {
    let hint = match &err {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|e| e.hint()).map(str::to_owned)
        }
        _ => None,
    };
    match hint.as_deref() {
        Some("faceoff:hold_posted") => {
            SettleError::Ledger(LedgerError::AlreadyResolved { hold_id, status: HoldStatus::Posted })
        }
        Some("faceoff:hold_not_found") => SettleError::Ledger(LedgerError::HoldNotFound(hold_id)),
        _ => SettleError::Db(err),
    }
}

/// What a delivered job is charged: its price; for a usage-billed job (`usage_markup` set) the
/// provider's reported cost in credits (1 credit = $0.01) times the markup, rounded up, at least
/// 1 and capped by the price (the hold; the rest returns to the wallet). A usage-billed job whose
/// provider reported no cost pays the price it held.
pub fn charge_for(price: i64, usage_markup: Option<f32>, usage_usd: Option<f64>) -> i64 {
    match (usage_markup, usage_usd) {
        (Some(markup), Some(usd)) if usd.is_finite() && usd >= 0.0 => {
            let credits = (usd * 100.0 * f64::from(markup) - 1e-9).ceil();
            (credits as i64).clamp(1, price.max(1)).min(price)
        }
        _ => price,
    }
}

/// The first line of a reason, at most 120 characters (for ledger memos).
fn short(reason: &str) -> String {
    let line = reason.lines().next().unwrap_or("");
    if line.chars().count() > 120 { format!("{}…", line.chars().take(119).collect::<String>()) } else { line.into() }
}

/// Jobs not settled yet (queued or running), across all users: the queue depth.
pub async fn pending_count(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM generation_job WHERE status IN ('queued', 'running')").fetch_one(db).await
}

#[cfg(test)]
mod tests {
    use super::charge_for;

    #[test]
    fn usage_billed_jobs_pay_the_reported_cost_capped_by_the_hold() {
        // Flat price: the price, whatever is reported.
        assert_eq!(charge_for(22, None, Some(0.01)), 22);
        // $0.0574 reported (7 024 image tokens at $30/M + prompt), markup 2.5: 14.35 → 15.
        assert_eq!(charge_for(60, Some(2.5), Some(0.0574)), 15);
        // Never more than the hold.
        assert_eq!(charge_for(60, Some(2.5), Some(0.9)), 60);
        // Nothing reported: the hold.
        assert_eq!(charge_for(60, Some(2.5), None), 60);
        // A tiny cost still costs a credit; nonsense is ignored.
        assert_eq!(charge_for(60, Some(2.5), Some(0.0)), 1);
        assert_eq!(charge_for(60, Some(2.5), Some(f64::NAN)), 60);
        assert_eq!(charge_for(60, Some(2.0), Some(0.10)), 20);
    }
}
