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

use std::time::Duration;

use serde::Serialize;
use sqlx::{FromRow, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    catalog::ModelChoice,
    ledger::{self, HoldStatus, LedgerError, Refs},
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

/// Tells live run pages that a job of `run_id` changed.
pub async fn notify_updated(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL_UPDATED).bind(run_id.to_string()).execute(db).await?;
    Ok(())
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

/// The claim of a queued job in fair order ($1 lease token, $2 lease seconds, $3 providers to
/// skip, $4/$5 the studio/API running limits, $6 the window): public for the benchmark's
/// `EXPLAIN` (`cargo bench --bench queue`).
pub const CLAIM_QUEUED_SQL: &str = "WITH head AS (
         SELECT job_id, user_id, interactive FROM generation_job
         WHERE status = 'queued' AND run_after <= now() AND NOT (provider = ANY($3))
         ORDER BY fair_slot, interactive DESC, job_id
         LIMIT $6
     ), next AS (
         SELECT j.job_id FROM generation_job j JOIN head h ON h.job_id = j.job_id
         WHERE j.status = 'queued'
           AND (SELECT count(*) FROM generation_job r
                WHERE r.user_id = h.user_id AND r.interactive = h.interactive AND r.status = 'running')
               < CASE WHEN h.interactive THEN $4 ELSE $5 END
         ORDER BY j.fair_slot, j.interactive DESC, j.job_id
         LIMIT 1
         FOR UPDATE OF j SKIP LOCKED
     )
     UPDATE generation_job j
     SET status = 'running', attempts = j.attempts + 1, lease_token = $1,
         lease_expires_at = now() + make_interval(secs => $2), started_at = COALESCE(j.started_at, now())
     FROM next WHERE j.job_id = next.job_id
     RETURNING j.job_id";

/// [`claim`] with per-user running limits (the workers pass the configured ones). The limit is
/// read without a lock: claims racing for one user may exceed it by the number of concurrent
/// claims.
pub async fn claim_with(
    pool: &PgPool,
    lease: Duration,
    skip_providers: &[String],
    limits: RunningLimits,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    let token = Uuid::new_v4();
    let expired: Option<Uuid> = sqlx::query_scalar(
        "WITH next AS (
             SELECT job_id FROM generation_job
             WHERE status = 'running' AND lease_expires_at < now() AND NOT (provider = ANY($3))
             ORDER BY lease_expires_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE generation_job j
         SET attempts = j.attempts + 1, lease_token = $1, lease_expires_at = now() + make_interval(secs => $2)
         FROM next WHERE j.job_id = next.job_id
         RETURNING j.job_id",
    )
    .bind(token)
    .bind(lease.as_secs_f64())
    .bind(skip_providers)
    .fetch_optional(pool)
    .await?;
    let claimed = match expired {
        Some(job_id) => Some(job_id),
        None => {
            sqlx::query_scalar(CLAIM_QUEUED_SQL)
                .bind(token)
                .bind(lease.as_secs_f64())
                .bind(skip_providers)
                .bind(i64::from(limits.studio))
                .bind(i64::from(limits.api))
                .bind(queue::CLAIM_WINDOW)
                .fetch_optional(pool)
                .await?
        }
    };
    let Some(job_id) = claimed else { return Ok(None) };
    let job = sqlx::query_as::<_, ClaimedJob>(
        "SELECT j.job_id, j.run_id, r.user_id, j.model_slug, j.model_name, j.variant_slug, j.variant_name,
                j.variant_is_default, j.provider, j.routes, j.route, j.usage_markup,
                j.endpoint, j.width, j.height, j.price, j.hold_id, j.deadline, j.attempts, j.lease_token,
                j.provider_impl, j.submission, r.prompt, r.seed, r.mode, r.aspect_ratio, r.reference_key, r.blind
         FROM generation_job j JOIN generation_run r USING (run_id)
         WHERE j.job_id = $1 AND j.lease_token = $2",
    )
    .bind(job_id)
    .bind(token)
    .fetch_optional(pool)
    .await?;
    Ok(job)
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

/// Records the provider task, and the route that accepted it, before polling it; `false` when
/// the lease was lost.
pub async fn record_submission(
    pool: &PgPool,
    job: &ClaimedJob,
    provider_impl: &str,
    route: &str,
    submission: &Submission,
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let done = sqlx::query(
        "UPDATE generation_job SET provider_impl = $3, submission = $4, progress = 0, route = $5
         WHERE job_id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(provider_impl)
    .bind(sqlx::types::Json(submission))
    .bind(route)
    .execute(&mut *tx)
    .await?;
    notify_updated(&mut *tx, job.run_id).await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Records progress (0–1) and announces it; `false` when the lease was lost.
pub async fn record_progress(pool: &PgPool, job: &ClaimedJob, progress: f32) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let done = sqlx::query(
        "UPDATE generation_job SET progress = $3 WHERE job_id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(progress)
    .execute(&mut *tx)
    .await?;
    notify_updated(&mut *tx, job.run_id).await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
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

/// Settles a job exactly once, fenced by its lease token: the job's final state and the hold's
/// post (delivered) or void (anything else) commit together.
pub async fn settle(pool: &PgPool, job: &ClaimedJob, outcome: &Outcome) -> Result<Settled, SettleError> {
    let mut tx = crate::db::begin(pool).await?;
    // Lock the row first and check the fence, so a late worker changes nothing.
    let owned: Option<i64> = sqlx::query_scalar(
        "SELECT hold_id FROM generation_job WHERE job_id = $1 AND lease_token = $2 AND status = 'running' FOR UPDATE",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .fetch_optional(&mut *tx)
    .await?;
    if owned.is_none() {
        tx.rollback().await?;
        return Ok(Settled::LostLease);
    }
    let refs = Refs { run_id: Some(job.run_id), job_id: Some(job.job_id), ..Refs::default() };
    let name = job.choice().label();
    let (status, reason, charged) = match outcome {
        Outcome::Delivered { usage_usd, .. } => {
            let charge = charge_for(job.price, job.usage_markup, *usage_usd);
            let memo = if charge < job.price {
                format!("{name}: image delivered (billed by usage, {charge} of {} credits held)", job.price)
            } else {
                format!("{name}: image delivered")
            };
            match ledger::post(&mut tx, job.hold_id, charge, &memo, refs).await {
                Ok(_) => (JobStatus::Delivered, None, charge),
                // The hold outlived its deadline and was voided by the sweeper: the image is free.
                Err(LedgerError::AlreadyResolved { status: HoldStatus::Voided, .. }) => {
                    (JobStatus::Delivered, Some("delivered after the hold expired; not charged".to_string()), 0)
                }
                Err(err) => return Err(err.into()),
            }
        }
        Outcome::Failed(why) | Outcome::Moderated(why) | Outcome::TimedOut(why) => {
            let memo = format!("{name}: not charged ({})", short(why));
            match ledger::void(&mut tx, job.hold_id, &memo, refs).await {
                Ok(_) => {}
                Err(LedgerError::AlreadyResolved { status: HoldStatus::Voided, .. }) => {}
                Err(err) => return Err(err.into()),
            }
            (outcome.status(), Some(why.clone()), 0)
        }
    };
    let (image_key, thumb_key, width, height) = match outcome {
        Outcome::Delivered { image_key, thumb_key, width, height, .. } => {
            (Some(image_key.clone()), thumb_key.clone(), Some(*width as i32), Some(*height as i32))
        }
        _ => (None, None, None, None),
    };
    sqlx::query(
        "UPDATE generation_job
         SET status = $3, reason = $4, image_key = $5, thumb_key = $6, image_width = $7, image_height = $8,
             charged = $9, progress = CASE WHEN $3 = 'delivered' THEN 1 ELSE progress END, finished_at = now(),
             lease_token = NULL, lease_expires_at = NULL
         WHERE job_id = $1 AND lease_token = $2 AND status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.lease_token)
    .bind(status)
    .bind(reason)
    .bind(image_key)
    .bind(thumb_key)
    .bind(width)
    .bind(height)
    .bind(charged)
    .execute(&mut *tx)
    .await?;
    // Webhook events (`job.failed`, `run.completed`) as small rows in this transaction; they
    // cannot fail it (a savepoint) and are delivered in the background.
    crate::webhooks::outbox::job_settled(&mut tx, job.user_id, job.run_id, job.job_id, status == JobStatus::Delivered)
        .await;
    notify_updated(&mut *tx, job.run_id).await?;
    tx.commit().await?;
    Ok(Settled::Done { charged })
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
