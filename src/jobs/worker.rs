//! The worker pool: claims jobs, drives them through their provider with
//! [`providers::drive`] (submit, record the task, poll with backoff, download), stores the image
//! and settles the job.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{ClaimedJob, NewMedia, Outcome, Settled};
use crate::{
    config::Config,
    providers::{self, DriveHooks, DriveLimits, Driven, GenerationRequest, Image, Providers, Route, Submission},
    storage::{self, Store},
};

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs run at once by this process (`FACEOFF_WORKERS`).
    pub workers: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How often idle workers look for jobs when no notification arrives.
    pub idle_poll: Duration,
    /// Jobs run at once per catalog provider by this process (BFL allows 24 active tasks).
    pub per_provider: usize,
    /// Transient provider failures tolerated in a row before a job fails.
    pub max_transient: u32,
    /// Jobs of one user (per source) run at once across all workers.
    pub running_limits: super::RunningLimits,
}

impl WorkerOptions {
    pub fn from_config(config: &Config) -> Self {
        WorkerOptions {
            workers: config.workers,
            lease: Duration::from_secs(60),
            idle_poll: Duration::from_secs(2),
            per_provider: 24,
            max_transient: 6,
            running_limits: super::RunningLimits::from_settings(&config.queue),
        }
    }
}

/// Per-provider concurrency limits, created on first use.
#[derive(Debug)]
struct Limits {
    per_provider: usize,
    map: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Limits {
    fn get(&self, provider: &str) -> Arc<Semaphore> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(provider.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_provider))).clone()
    }

    /// Providers with no free slot: their jobs are not claimed for now.
    fn saturated(&self) -> Vec<String> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().filter(|(_, s)| s.available_permits() == 0).map(|(k, _)| k.clone()).collect()
    }
}

/// Everything a worker needs; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub pool: PgPool,
    pub store: Store,
    pub providers: Providers,
    pub options: WorkerOptions,
    limits: Arc<Limits>,
    wake: Arc<Notify>,
}

impl Engine {
    pub fn new(pool: PgPool, store: Store, providers: Providers, options: WorkerOptions) -> Self {
        let limits = Arc::new(Limits { per_provider: options.per_provider.max(1), map: Mutex::default() });
        Engine { pool, store, providers, options, limits, wake: Arc::new(Notify::new()) }
    }

    /// Claims and runs at most one job; `Ok(false)` when there was none. (Tests and the
    /// benchmark drive workers with this; the pool loops over [`Engine::claim`] and
    /// [`Engine::run_job`].)
    pub async fn run_once(&self, shutdown: &CancellationToken) -> anyhow::Result<bool> {
        let Some(job) = self.claim().await? else {
            return Ok(false);
        };
        self.run_job(job, shutdown).await?;
        Ok(true)
    }

    /// Claims the next job of a provider with a free slot in this process.
    async fn claim(&self) -> anyhow::Result<Option<ClaimedJob>> {
        let skip = self.limits.saturated();
        Ok(super::claim_with(&self.pool, self.options.lease, &skip, self.options.running_limits).await?)
    }

    /// Runs a claimed job in its provider's slot.
    async fn run_job(&self, job: ClaimedJob, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let _permit = self.limits.get(&job.provider).acquire_owned().await?;
        self.run_claimed(job, shutdown).await
    }

    /// Runs a claimed job to its end (or gives it back on shutdown), keeping its lease alive.
    pub async fn run_claimed(&self, job: ClaimedJob, shutdown: &CancellationToken) -> anyhow::Result<()> {
        // Stops the drive: cancelled on shutdown, or by the heartbeat when the lease is lost.
        let stop = shutdown.child_token();
        // Ends the heartbeat once the drive is over.
        let done = CancellationToken::new();
        let heartbeat = {
            let (pool, job, lease) = (self.pool.clone(), job.clone(), self.options.lease);
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease / 3);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = done.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    match super::heartbeat(&pool, &job, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(job = %job.job_id, "lease lost; abandoning the job");
                            stop.cancel();
                            break;
                        }
                        Err(err) => tracing::warn!(job = %job.job_id, "heartbeat: {err}"),
                    }
                }
            })
        };
        let result = self.drive(&job, &stop).await;
        done.cancel();
        let _ = heartbeat.await;
        match result {
            Ok(Step::Settle(outcome, route)) => match super::settle(&self.pool, &job, &outcome).await? {
                Settled::Done { charged } => {
                    tracing::info!(job = %job.job_id, model = %job.model_slug, ?outcome, charged, route, "job settled");
                    // The route: which adapter ran it (`sandbox`, `bfl`, `fal`, …).
                    metrics::counter!(
                        "jobs_settled_total",
                        "status" => outcome_label(&outcome),
                        "route" => route,
                        "model" => job.model_slug.clone()
                    )
                    .increment(1);
                }
                Settled::LostLease => tracing::warn!(job = %job.job_id, "job was settled by another worker"),
            },
            Ok(Step::Abandon) => {
                if shutdown.is_cancelled() && super::release(&self.pool, &job).await? {
                    tracing::info!(job = %job.job_id, "job released for another worker (shutting down)");
                }
            }
            Err(err) => {
                // Leave the lease to expire: another worker (or this one) retries the job later.
                tracing::warn!(job = %job.job_id, "job interrupted: {err:#}");
            }
        }
        Ok(())
    }

    /// Drives the job through its provider (resuming its recorded task when there is one) and
    /// says how to settle it; `Step::Abandon` when `stop` was cancelled or the lease was lost.
    async fn drive(&self, job: &ClaimedJob, stop: &CancellationToken) -> anyhow::Result<Step> {
        if OffsetDateTime::now_utc() >= job.deadline {
            return Ok(Step::Settle(Outcome::TimedOut("no image arrived before the job's deadline".into()), "none"));
        }
        let mut routes: Vec<Route> = job.routes.iter().filter_map(|r| Route::parse(r)).collect();
        if routes.is_empty() {
            // A job queued before routes existed: its catalog provider's own API.
            routes.extend(Route::parse(&format!("{}:{}", job.provider, job.endpoint)));
        }
        let plan = self.providers.plan(&routes, &job.endpoint);
        let reference_image = match &job.reference_key {
            Some(key) => {
                Some(self.store.get(key).await?.ok_or_else(|| anyhow::anyhow!("reference image {key} is missing"))?)
            }
            None => None,
        };
        let request = GenerationRequest {
            endpoint: job_endpoint(job),
            model: job.model_slug.clone(),
            // The sandbox draws this name on its renderings: a blind run's must not tell.
            model_name: if job.blind { "blind comparison".into() } else { job.choice().label() },
            prompt: job.prompt.clone(),
            seed: job.seed as u32,
            mode: job.mode(),
            aspect_ratio: job.aspect_ratio.clone(),
            width: job.width as u32,
            height: job.height as u32,
            reference_image,
        };

        // Resume the task recorded on its route (by the same adapter); submit otherwise.
        // (A task recorded before routes existed has no route: the first one of its adapter.)
        let resume = match (&job.submission, &job.route, &job.provider_impl) {
            (Some(sub), Some(route), Some(adapter)) if route.split(':').next() == Some(adapter.as_str()) => {
                Some((route.clone(), sub.0.clone()))
            }
            (Some(sub), None, Some(adapter)) => {
                plan.iter().find(|(r, _)| &r.via == adapter).map(|(r, _)| (r.to_string(), sub.0.clone()))
            }
            _ => None,
        };
        let mut hooks = JobHooks { pool: &self.pool, job, route: None };
        let (driven, route) = providers::drive_routes(
            &plan,
            &request,
            tokio_deadline(job.deadline),
            stop,
            DriveLimits { max_transient: self.options.max_transient },
            resume,
            &mut hooks,
        )
        .instrument(tracing::info_span!("job", job = %job.job_id))
        .await?;
        let via = route.as_ref().map(|r| adapter_label(&r.via)).unwrap_or("none");
        Ok(match driven {
            Driven::Image(image) => Step::Settle(self.store_image(job, image).await?, via),
            Driven::Moderated(reason) => Step::Settle(Outcome::Moderated(reason), via),
            Driven::Failed(reason) | Driven::Unavailable(reason) => Step::Settle(Outcome::Failed(reason), via),
            Driven::TimedOut(reason) => Step::Settle(Outcome::TimedOut(reason), via),
            Driven::Stopped => Step::Abandon,
        })
    }

    /// Stores the delivered image and, when it is larger than the thumbnail box, its WebP
    /// thumbnail; their `media_object` rows (owner = the run's user) are written when the job
    /// settles. An image already within the box is its own thumbnail (the pages fall back to
    /// the original when a job has none): decoding and encoding it again would only make a
    /// larger copy.
    async fn store_image(&self, job: &ClaimedJob, image: Image) -> anyhow::Result<Outcome> {
        let Image { bytes, content_type, width, height, usage_usd } = image;
        let ext = match content_type.as_str() {
            "image/png" => "png",
            "image/webp" => "webp",
            _ => "jpg",
        };
        let image_key = format!("runs/{}/{}.{ext}", job.run_id, job.job_id);
        let fits = matches!(
            storage::images::probe(&bytes, &storage::images::GENERATED),
            Ok(p) if p.width <= THUMB_SIDE && p.height <= THUMB_SIDE
        );
        let thumb = if fits {
            None
        } else {
            let for_thumb = bytes.clone();
            Some(storage::images::run(move || storage::thumbnail_webp(&for_thumb, THUMB_SIDE)).await?)
        };
        let mut media = vec![NewMedia {
            key: image_key.clone(),
            content_type: content_type.clone(),
            byte_size: bytes.len() as i64,
            width: Some(width as i32),
            height: Some(height as i32),
        }];
        self.store.put(&image_key, bytes).await?;
        let thumb_key = match thumb {
            None => None,
            Some(Ok((thumb, w, h))) => {
                let thumb_key = format!("runs/{}/{}.thumb.webp", job.run_id, job.job_id);
                media.push(NewMedia {
                    key: thumb_key.clone(),
                    content_type: "image/webp".into(),
                    byte_size: thumb.len() as i64,
                    width: Some(w as i32),
                    height: Some(h as i32),
                });
                self.store.put(&thumb_key, thumb).await?;
                Some(thumb_key)
            }
            Some(Err(err)) => {
                tracing::warn!(job = %job.job_id, "no thumbnail: {err:#}");
                None
            }
        };
        Ok(Outcome::Delivered { image_key, thumb_key, width, height, usage_usd, media })
    }

    /// One worker: claims and runs jobs until `shutdown`.
    async fn work(self, id: usize, shutdown: CancellationToken) {
        tracing::debug!(worker = id, "worker started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let job = {
                // Register for a wake-up before looking, so a notification in between is not
                // lost; only while claiming: a wake-up that comes while this worker runs a job
                // belongs to an idle one (dropping this registration passes it on).
                let notified = self.wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.claim().await {
                    Ok(Some(job)) => job,
                    claimed => {
                        if let Err(err) = claimed {
                            tracing::warn!(worker = id, "worker: {err:#}");
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = &mut notified => {}
                            _ = tokio::time::sleep(self.options.idle_poll) => {}
                        }
                        continue;
                    }
                }
            };
            // There may be more: pass the wake-up on to one idle worker (a burst of new jobs
            // wakes the workers one claim at a time, not all of them for each NOTIFY).
            self.wake.notify_one();
            if let Err(err) = self.run_job(job, &shutdown).await {
                tracing::warn!(worker = id, "worker: {err:#}");
            }
        }
        tracing::debug!(worker = id, "worker stopped");
    }

    /// Forwards `NOTIFY` on the queue channel to one idle worker until `shutdown` (a
    /// reconnection wakes one too: jobs queued meanwhile were announced to nobody). A worker
    /// that claims a job wakes the next one, so every idle worker joins while there is work and
    /// an announcement costs one empty claim at most, instead of one per idle worker.
    async fn listen(self, shutdown: CancellationToken) {
        let wake = self.wake.clone();
        crate::db::listen(&self.pool, super::CHANNEL_QUEUED, "job listener", &shutdown, |_| {
            wake.notify_one();
            std::future::ready(())
        })
        .await;
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    outcome.status().as_str()
}

/// The variant's endpoint, as recorded on the job.
fn job_endpoint(job: &ClaimedJob) -> String {
    job.endpoint.clone()
}

/// A metrics label for an adapter name (a fixed set, never free text).
fn adapter_label(via: &str) -> &'static str {
    providers::ADAPTERS.iter().find(|a| **a == via).copied().unwrap_or("sandbox")
}

/// The longest side of a thumbnail (the web rendition the pages show).
const THUMB_SIDE: u32 = 512;

enum Step {
    /// Settle with this outcome; the label of the adapter that produced it.
    Settle(Outcome, &'static str),
    /// Stop without settling: shutting down or the lease was lost.
    Abandon,
}

/// What the worker records while a job is driven, each write fenced by the job's lease: the new
/// provider task (before its first poll, so a restarted worker resumes it) and the progress.
/// A write that finds the lease gone stops the drive.
struct JobHooks<'a> {
    pool: &'a PgPool,
    job: &'a ClaimedJob,
    /// The route being tried (its adapter accepts the task).
    route: Option<Route>,
}

impl DriveHooks for JobHooks<'_> {
    async fn route(&mut self, route: &Route) -> anyhow::Result<bool> {
        self.route = Some(route.clone());
        Ok(true)
    }

    async fn submitted(&mut self, submission: &Submission) -> anyhow::Result<bool> {
        let route = self.route.as_ref().map(Route::to_string).unwrap_or_default();
        let adapter = self.route.as_ref().map(|r| r.via.as_str()).unwrap_or("sandbox");
        Ok(super::record_submission(self.pool, self.job, adapter, &route, submission).await?)
    }

    async fn progress(&mut self, progress: f32) -> anyhow::Result<bool> {
        Ok(super::record_progress(self.pool, self.job, progress).await?)
    }
}

/// The job's deadline (wall clock, from the database) on tokio's clock, which the driver uses.
fn tokio_deadline(deadline: OffsetDateTime) -> tokio::time::Instant {
    let left = (deadline - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    tokio::time::Instant::now() + left.unsigned_abs()
}

/// Starts `options.workers` workers (none when 0) and the listener that wakes them. They stop
/// when `shutdown` is cancelled: running jobs are given back to the queue, never left half-settled.
pub fn spawn_workers(
    pool: PgPool,
    store: Store,
    providers: Providers,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    if options.workers == 0 {
        return Vec::new();
    }
    let engine = Engine::new(pool, store, providers, options);
    let mut tasks = vec![tokio::spawn(engine.clone().listen(shutdown.clone()))];
    for id in 0..engine.options.workers {
        tasks.push(tokio::spawn(engine.clone().work(id, shutdown.clone())));
    }
    tracing::info!(workers = engine.options.workers, "generation workers started");
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturated_providers_are_skipped() {
        let limits = Limits { per_provider: 1, map: Mutex::default() };
        let sem = limits.get("bfl");
        assert!(limits.saturated().is_empty());
        let permit = sem.try_acquire_owned().expect("free");
        assert_eq!(limits.saturated(), vec!["bfl".to_string()]);
        drop(permit);
        assert!(limits.saturated().is_empty());
    }
}
