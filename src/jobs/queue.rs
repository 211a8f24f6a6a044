//! The fair queue: where a new job goes, the per-user limits, and what a waiting job (or a run
//! about to be submitted) can expect.
//!
//! Jobs are claimed in `fair_slot` order (start-time fair queueing, `generation_job_fair_idx`).
//! Each user's jobs of one [`Source`] form a *flow*; a new job's slot is the later of the
//! queue's virtual time (the smallest slot still queued) and one past the last slot its flow
//! holds, so a user with 10,000 queued jobs holds slots far ahead while another user's first
//! job lands at the front. API jobs take one slot each; the jobs of a studio run share one slot
//! and win ties (`interactive DESC`): a person waiting on the page is served before bulk API
//! work, also their own. Computing a slot reads the head of the fair index and the user's
//! pending jobs, never the queue; a place counts at most [`MAX_COUNTED`] entries and estimates
//! the rest. The queue's SQL functions pin their plans (see
//! `migrations/20261202000000_queue_plans.up.sql`): a queue's statistics are always stale.
//!
//! Limits: at most `max_queued` jobs of a user and source may wait (a submission over it is
//! refused and creates nothing; the check runs in the submission's transaction under a per-user
//! lock, so concurrent submissions cannot pass it together), and at most `max_running` run at
//! once (the claim skips the user's jobs meanwhile).

use std::time::Duration;

use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::config::{JobLimits, QueueSettings};

/// Where a run was submitted: the studio (a person waits on the page) or the JSON API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Source {
    Studio,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Studio => "studio",
            Source::Api => "api",
        }
    }

    /// Studio jobs are interactive: claimed first among equals.
    pub fn interactive(self) -> bool {
        self == Source::Studio
    }

    pub fn limits(self, settings: &QueueSettings) -> JobLimits {
        match self {
            Source::Studio => settings.studio,
            Source::Api => settings.api,
        }
    }
}

/// How far ahead the window of the claim looks for a job whose user is under their running
/// limit (the claim reads at most this many index entries).
pub const CLAIM_WINDOW: i64 = 32;

/// Serializes the submissions of one user until the transaction ends (the limits are checked
/// and the slots chosen under it).
pub async fn lock_user(db: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('faceoff:queue:' || $1::text, 0))")
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// A user's unsettled jobs of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct UserLoad {
    pub queued: i64,
    pub running: i64,
}

pub async fn user_load(db: impl PgExecutor<'_>, user_id: Uuid, source: Source) -> Result<UserLoad, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'queued') AS queued, count(*) FILTER (WHERE status = 'running') AS running
         FROM generation_job WHERE user_id = $1 AND interactive = $2 AND status IN ('queued', 'running')",
    )
    .bind(user_id)
    .bind(source.interactive())
    .fetch_one(db)
    .await
}

/// The first slot for `count` new jobs of the user's flow (API jobs take `slot`, `slot + 1`, …;
/// a studio run's jobs all take `slot`): `job_queue_next_slot`, which `faceoff_create_run` uses
/// too. Reads the head of the fair index and the user's pending jobs, never the queue.
pub async fn next_slot(db: impl PgExecutor<'_>, user_id: Uuid, source: Source) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT slot FROM job_queue_next_slot($1, $2)")
        .bind(user_id)
        .bind(source.interactive())
        .fetch_one(db)
        .await
}

/// How many of the latest starts [`start_rate`] reads: enough for a steady estimate, and a bound
/// on its cost however busy the route is.
pub const RATE_SAMPLE: i32 = 200;

/// Jobs of a provider route (or all routes) that started recently, per second (`None` without
/// any): the latest [`RATE_SAMPLE`] starts of the last 5 minutes over the time since the oldest
/// of them (at least 10 s). Reads at most [`RATE_SAMPLE`] entries of `generation_job_started_idx`.
pub async fn start_rate(db: impl PgExecutor<'_>, provider: Option<&str>) -> Result<Option<f64>, sqlx::Error> {
    let (count, span): (i64, Option<f64>) = match provider {
        Some(provider) => sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(started_at))::float8 FROM (
                 SELECT started_at FROM generation_job
                 WHERE provider = $1 AND started_at > now() - interval '5 minutes'
                 ORDER BY provider DESC, started_at DESC LIMIT $2) recent",
        )
        .bind(provider)
        .bind(RATE_SAMPLE),
        None => sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(started_at))::float8 FROM (
                 SELECT started_at FROM generation_job
                 WHERE started_at > now() - interval '5 minutes'
                 ORDER BY started_at DESC LIMIT $1) recent",
        )
        .bind(RATE_SAMPLE),
    }
    .fetch_one(db)
    .await?;
    Ok(rate(count, span))
}

/// Starts per second from `count` starts over the `span` seconds since the oldest of them (at
/// least 10 s); `None` without any.
pub fn rate(count: i64, span: Option<f64>) -> Option<f64> {
    match span {
        Some(span) if count > 0 => Some(count as f64 / span.max(10.0)),
        _ => None,
    }
}

/// Positions are counted exactly up to this many jobs ahead and estimated beyond ("around 2,300
/// jobs ahead"): a count reads an index entry and a row per job ahead, so the bound is what a
/// submission or a studio page costs however deep the queue is. Past it, `job_queue_ahead`
/// takes the jobs between the last one counted and this job's slot to fill the fair slots as
/// densely as the counted ones did (about one per waiting flow and slot).
pub const MAX_COUNTED: i64 = 100;

/// Queued jobs (of `provider`, or all) claimed before a job at `slot`: counted up to
/// [`MAX_COUNTED`], estimated beyond (`job_queue_ahead`: walks `generation_job_fair_idx` in
/// order and stops at the limit).
async fn ahead_of(
    db: impl PgExecutor<'_>,
    provider: Option<&str>,
    slot: i64,
    interactive: bool,
    job_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT job_queue_ahead($1, $2, $3, $4, $5)")
        .bind(provider)
        .bind(slot)
        .bind(interactive)
        .bind(job_id)
        .bind(MAX_COUNTED)
        .fetch_one(db)
        .await
}

/// What a queued job (or a run about to be submitted) can expect.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Wait {
    /// Jobs of the same provider route claimed before this one: counted exactly below 100; from
    /// 100 on, an estimate (the first 100 counted, the rest from how densely they fill the
    /// queue's turns).
    pub ahead: i64,
    /// About how many seconds until it starts, from the route's recent throughput (null while
    /// nothing started on it in the last 5 minutes).
    pub estimated_start_seconds: Option<u64>,
    /// The same in words: "3 jobs ahead, about 40 s before it starts".
    #[schema(example = "3 jobs ahead, about 40 s before it starts")]
    pub label: String,
}

impl Wait {
    pub fn new(ahead: i64, rate: Option<f64>) -> Wait {
        let estimated_start_seconds = rate.filter(|r| *r > 0.0).map(|r| (ahead as f64 / r).ceil() as u64);
        let jobs = match ahead {
            0 => "Next in line".to_string(),
            1 => "1 job ahead".to_string(),
            n if n >= MAX_COUNTED => format!("around {} jobs ahead", rough(n)),
            n => format!("{n} jobs ahead"),
        };
        let label = match estimated_start_seconds {
            Some(secs) if ahead > 0 => format!("{jobs}, about {} before it starts", seconds_label(secs)),
            _ => jobs,
        };
        Wait { ahead, estimated_start_seconds, label }
    }
}

/// An estimate to two significant digits, grouped by thousands: 1,043 → "1,000", 23,456 →
/// "23,000", 150 → "150".
fn rough(n: i64) -> String {
    let mut scale = 1;
    while n / scale >= 100 {
        scale *= 10;
    }
    let rounded = ((n + scale / 2) / scale * scale).to_string();
    let mut grouped = String::with_capacity(rounded.len() + rounded.len() / 3);
    for (i, digit) in rounded.chars().enumerate() {
        if i > 0 && (rounded.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// "40 s", "3 min", "1 h 5 min".
pub fn seconds_label(secs: u64) -> String {
    match secs {
        0..60 => format!("{} s", secs.max(1)),
        60..3600 => format!("{} min", secs.div_ceil(60)),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

/// The places of those of `job_ids` that are queued, each with the estimated start: the jobs of
/// its provider route claimed before it (estimated past [`MAX_COUNTED`]) and the route's [`start_rate`],
/// in one statement (`job_queue_places`, which counts each route's queue once for all the
/// jobs given, not once per job). Jobs not queued are left out.
pub async fn places(db: impl PgExecutor<'_>, job_ids: &[Uuid]) -> Result<Vec<(Uuid, Wait)>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, i64, Option<f64>)> =
        sqlx::query_as("SELECT job_id, ahead, started, span FROM job_queue_places($1, $2, $3)")
            .bind(job_ids)
            .bind(MAX_COUNTED)
            .bind(RATE_SAMPLE)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(id, ahead, started, span)| (id, Wait::new(ahead, rate(started, span)))).collect())
}

/// The wait a new studio run of `user_id` would have now (all routes together): shown in the
/// studio before paying.
pub async fn studio_wait(db: &mut PgConnection, user_id: Uuid) -> Result<Wait, sqlx::Error> {
    let slot = next_slot(&mut *db, user_id, Source::Studio).await?;
    let ahead = ahead_of(&mut *db, None, slot, true, Uuid::max()).await?;
    let rate = start_rate(&mut *db, None).await?;
    Ok(Wait::new(ahead, rate))
}

/// How long the oldest queued job has waited (zero when none waits).
pub async fn oldest_queued_age(db: impl PgExecutor<'_>) -> Result<Duration, sqlx::Error> {
    let secs: f64 = sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 FROM generation_job WHERE status = 'queued'",
    )
    .fetch_one(db)
    .await?;
    Ok(Duration::from_secs_f64(secs.max(0.0)))
}

/// The queue of one provider route, for `/metrics`.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct RouteStats {
    pub provider: String,
    pub queued: i64,
    pub oldest_queued_seconds: f64,
}

pub async fn route_stats(db: impl PgExecutor<'_>) -> Result<Vec<RouteStats>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, count(*) AS queued,
                EXTRACT(EPOCH FROM now() - min(created_at))::float8 AS oldest_queued_seconds
         FROM generation_job WHERE status = 'queued' GROUP BY provider ORDER BY provider",
    )
    .fetch_all(db)
    .await
}

/// Running limits per source, for the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningLimits {
    pub studio: u32,
    pub api: u32,
}

impl RunningLimits {
    /// No limit (tests and tools that claim by hand).
    pub const NONE: RunningLimits = RunningLimits { studio: u32::MAX, api: u32::MAX };

    pub fn from_settings(settings: &QueueSettings) -> Self {
        RunningLimits { studio: settings.studio.max_running, api: settings.api.max_running }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_sentences() {
        assert_eq!(Wait::new(0, Some(2.0)).label, "Next in line");
        assert_eq!(Wait::new(1, None).label, "1 job ahead");
        let w = Wait::new(80, Some(2.0));
        assert_eq!(w.estimated_start_seconds, Some(40));
        assert_eq!(w.label, "80 jobs ahead, about 40 s before it starts");
        assert_eq!(Wait::new(600, Some(2.0)).label, "around 600 jobs ahead, about 5 min before it starts");
        assert_eq!(Wait::new(99, None).label, "99 jobs ahead");
        assert_eq!(Wait::new(MAX_COUNTED, None).label, "around 100 jobs ahead");
        assert_eq!(Wait::new(1_043, Some(2.0)).label, "around 1,000 jobs ahead, about 9 min before it starts");
        assert_eq!(Wait::new(23_456, None).label, "around 23,000 jobs ahead");
        assert_eq!(seconds_label(3900), "1 h 5 min");
        assert_eq!(rough(150), "150");
        assert_eq!(rough(995), "1,000");
        assert_eq!(rough(1_250_000), "1,300,000");
    }
}
