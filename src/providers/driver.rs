//! Driving one generation through a provider: submit (retrying transient failures with
//! backoff), hand the new task to the caller to persist before polling, poll until the image
//! arrives, and map what the provider says to a [`Driven`] outcome. The job worker and the
//! showcase images both go through [`drive`]; what differs between them (resuming a recorded
//! task, recording the task and the progress) comes in through [`Drive::resume`] and
//! [`DriveHooks`].
//!
//! All waiting uses tokio's clock ([`Instant`]), never sleeps past the deadline, and ends at
//! once when [`Drive::cancel`] is cancelled (shutdown, or a worker's lost lease).

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::{GenerationRequest, Image, Poll, Provider, ProviderError, Route, Submission};

/// One generation to drive.
pub struct Drive<'a> {
    pub provider: &'a dyn Provider,
    pub request: &'a GenerationRequest,
    /// No image after this: the drive ends [`Driven::TimedOut`].
    pub deadline: Instant,
    /// Cancelled on shutdown (or when the caller lost the right to the work): the drive ends
    /// [`Driven::Stopped`] at its next wait.
    pub cancel: &'a CancellationToken,
    pub limits: DriveLimits,
    /// A task already accepted by this provider for this request (and recorded by the caller):
    /// it is polled, never submitted again.
    pub resume: Option<Submission>,
}

/// Limits of one drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriveLimits {
    /// Transient provider failures tolerated in a row (at submission, then while polling)
    /// before the drive ends [`Driven::Failed`].
    pub max_transient: u32,
}

/// How a drive ended.
#[derive(Debug)]
pub enum Driven {
    /// The provider delivered the image.
    Image(Image),
    /// The provider's safety filter refused the prompt or the result.
    Moderated(String),
    /// The provider refused or gave up.
    Failed(String),
    /// The provider kept failing transiently (timeouts, 429, 5xx): another route may do better.
    Unavailable(String),
    /// No image before the deadline.
    TimedOut(String),
    /// Cancelled, or a hook said stop: no outcome to record.
    Stopped,
}

/// What the caller does along the way. Each hook answers `Ok(false)` to stop the drive
/// ([`Driven::Stopped`], e.g. the worker lost its lease); an error ends the drive with that
/// error. The defaults do nothing and go on.
pub trait DriveHooks: Send {
    /// A new task was accepted: called before its first poll, so it can be persisted and a
    /// restarted caller resumes it instead of paying for a second one.
    fn submitted(&mut self, submission: &Submission) -> impl Future<Output = anyhow::Result<bool>> + Send {
        let _ = submission;
        async { Ok(true) }
    }

    /// The task reported `progress` (0..1); called when it moved by 5 % or more since the last
    /// call.
    fn progress(&mut self, progress: f32) -> impl Future<Output = anyhow::Result<bool>> + Send {
        let _ = progress;
        async { Ok(true) }
    }

    /// [`drive_routes`] is about to try `route` (its task, once accepted, belongs to it).
    fn route(&mut self, route: &Route) -> impl Future<Output = anyhow::Result<bool>> + Send {
        let _ = route;
        async { Ok(true) }
    }
}

/// Transient failures tolerated on a route that has another route after it: it falls through
/// quickly instead of spending the job's deadline on backoff.
pub const MAX_TRANSIENT_BEFORE_FALLTHROUGH: u32 = 2;

/// Drives `request` along `plan` (routes with their adapters, in order, as
/// [`super::Providers::plan`] makes it): each route gets the request with its own endpoint; a
/// route whose drive ends [`Driven::Unavailable`] (kept failing transiently) falls through to
/// the next. `resume` = a task recorded on one route (`via:endpoint`): driving starts there and
/// polls it. `hooks.route` is told of each route before it is tried. Returns the outcome and
/// the route that produced it.
pub async fn drive_routes(
    plan: &[(Route, Arc<dyn Provider>)],
    request: &GenerationRequest,
    deadline: Instant,
    cancel: &CancellationToken,
    limits: DriveLimits,
    resume: Option<(String, Submission)>,
    hooks: &mut impl DriveHooks,
) -> anyhow::Result<(Driven, Option<Route>)> {
    let (start, mut resume) = match resume {
        Some((route, submission)) => match plan.iter().position(|(r, _)| r.to_string() == route) {
            Some(i) => (i, Some(submission)),
            None => (0, None),
        },
        None => (0, None),
    };
    let mut last = (Driven::Failed("no route can run this model".into()), None);
    for (i, (route, provider)) in plan.iter().enumerate().skip(start) {
        let more = i + 1 < plan.len();
        if !hooks.route(route).await? {
            return Ok((Driven::Stopped, Some(route.clone())));
        }
        let request = GenerationRequest { endpoint: route.endpoint.clone(), ..request.clone() };
        let limits = if more {
            DriveLimits { max_transient: limits.max_transient.min(MAX_TRANSIENT_BEFORE_FALLTHROUGH) }
        } else {
            limits
        };
        let job =
            Drive { provider: provider.as_ref(), request: &request, deadline, cancel, limits, resume: resume.take() };
        let driven = drive(job, hooks).await?;
        match driven {
            Driven::Unavailable(why) if more => {
                tracing::info!(route = %route, "route unavailable, trying the next one: {why}");
                last = (Driven::Unavailable(why), Some(route.clone()));
            }
            other => return Ok((other, Some(route.clone()))),
        }
    }
    Ok(last)
}

/// Hooks that record nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl DriveHooks for NoHooks {}

/// Why a drive times out before the provider accepted the task.
const NOT_ACCEPTED_IN_TIME: &str = "the provider did not accept the job in time";
/// Why a drive times out later.
const NO_IMAGE_IN_TIME: &str = "no image arrived before the job's deadline";
/// Progress is reported to [`DriveHooks::progress`] in steps of at least this much.
const PROGRESS_STEP: f32 = 0.05;

/// Drives `drive.request` through `drive.provider` to an outcome: submits (or resumes
/// `drive.resume`), calls `hooks.submitted` with a new task before polling it, polls at the
/// provider's `poll_interval` (backing off after transient failures), reports progress to
/// `hooks.progress`. Errors come only from the hooks; what the provider says is in the
/// [`Driven`] outcome.
pub async fn drive(drive: Drive<'_>, hooks: &mut impl DriveHooks) -> anyhow::Result<Driven> {
    let Drive { provider, request, deadline, cancel, limits, resume } = drive;
    if cancel.is_cancelled() {
        return Ok(Driven::Stopped);
    }
    if Instant::now() >= deadline {
        return Ok(Driven::TimedOut(NO_IMAGE_IN_TIME.into()));
    }
    let submission = match resume {
        Some(submission) => submission,
        None => {
            let submission = match submit(provider, request, deadline, cancel, limits).await {
                Ok(submission) => submission,
                Err(end) => return Ok(end),
            };
            if !hooks.submitted(&submission).await? {
                return Ok(Driven::Stopped);
            }
            submission
        }
    };
    poll(provider, request, &submission, deadline, cancel, limits, hooks).await
}

/// Submits, retrying transient failures with backoff. `Err(outcome)` ends the drive.
async fn submit(
    provider: &dyn Provider,
    request: &GenerationRequest,
    deadline: Instant,
    cancel: &CancellationToken,
    limits: DriveLimits,
) -> Result<Submission, Driven> {
    let mut failures = 0u32;
    loop {
        if Instant::now() >= deadline {
            return Err(Driven::TimedOut(NOT_ACCEPTED_IN_TIME.into()));
        }
        match provider.submit(request).await {
            Ok(submission) => return Ok(submission),
            Err(ProviderError::Moderated(why)) => return Err(Driven::Moderated(why)),
            Err(ProviderError::Fatal(why)) => return Err(Driven::Failed(why)),
            Err(err @ (ProviderError::Transient(_) | ProviderError::RateLimited { .. })) => {
                let why = reason(&err);
                failures += 1;
                tracing::info!(provider = provider.name(), failures, "transient submit failure: {why}");
                if failures > limits.max_transient {
                    return Err(Driven::Unavailable(kept_failing(failures, &why)));
                }
                if !sleep(wait_after(&err, failures), deadline, cancel).await {
                    return Err(Driven::Stopped);
                }
            }
        }
    }
}

/// Polls `submission` until it ends, the deadline passes or the drive is cancelled.
async fn poll(
    provider: &dyn Provider,
    request: &GenerationRequest,
    submission: &Submission,
    deadline: Instant,
    cancel: &CancellationToken,
    limits: DriveLimits,
    hooks: &mut impl DriveHooks,
) -> anyhow::Result<Driven> {
    let mut attempt = 0u32;
    let mut failures = 0u32;
    let mut last_progress = -1.0f32;
    let mut last_error: Option<ProviderError> = None;
    loop {
        let wait = match &last_error {
            Some(err) if failures > 0 => wait_after(err, failures),
            _ => provider.poll_interval(attempt),
        };
        if !sleep(wait, deadline, cancel).await {
            return Ok(Driven::Stopped);
        }
        if Instant::now() >= deadline {
            return Ok(Driven::TimedOut(NO_IMAGE_IN_TIME.into()));
        }
        attempt += 1;
        match provider.poll(request, submission).await {
            Ok(Poll::Pending { progress }) => {
                failures = 0;
                last_error = None;
                if let Some(p) = progress
                    && (p - last_progress).abs() >= PROGRESS_STEP
                {
                    last_progress = p;
                    if !hooks.progress(p).await? {
                        return Ok(Driven::Stopped);
                    }
                }
            }
            Ok(Poll::Ready(image)) => return Ok(Driven::Image(image)),
            Ok(Poll::Moderated { reason }) => return Ok(Driven::Moderated(reason)),
            Ok(Poll::Failed { reason }) => return Ok(Driven::Failed(reason)),
            Err(ProviderError::Moderated(why)) => return Ok(Driven::Moderated(why)),
            Err(ProviderError::Fatal(why)) => return Ok(Driven::Failed(why)),
            Err(err @ (ProviderError::Transient(_) | ProviderError::RateLimited { .. })) => {
                let why = reason(&err);
                failures += 1;
                tracing::info!(provider = provider.name(), failures, "transient poll failure: {why}");
                if failures > limits.max_transient {
                    return Ok(Driven::Unavailable(kept_failing(failures, &why)));
                }
                last_error = Some(err);
            }
        }
    }
}

fn kept_failing(failures: u32, why: &str) -> String {
    format!("the provider kept failing ({failures} attempts): {why}")
}

/// Sleeps for `duration`, but never past `deadline`; `false` when cancelled instead. A zero
/// duration does not wait (nor arm a timer).
async fn sleep(duration: Duration, deadline: Instant, cancel: &CancellationToken) -> bool {
    if duration.is_zero() {
        return !cancel.is_cancelled();
    }
    let until = (Instant::now() + duration).min(deadline);
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep_until(until) => true,
    }
}

/// The words of a transient failure (without the variant's prefix).
fn reason(err: &ProviderError) -> String {
    match err {
        ProviderError::Transient(why) | ProviderError::Fatal(why) | ProviderError::Moderated(why) => why.clone(),
        ProviderError::RateLimited { message, .. } => message.clone(),
    }
}

/// How long to wait after the `failures`-th transient failure in a row: the backoff, or longer
/// when a rate limit said how long.
fn wait_after(err: &ProviderError, failures: u32) -> Duration {
    match err {
        ProviderError::RateLimited { retry_after: Some(wait), .. } => backoff(failures).max(*wait),
        _ => backoff(failures),
    }
}

/// Exponential backoff with jitter: about 0.5 s, 1 s, 2 s … capped at 15 s.
fn backoff(failures: u32) -> Duration {
    let base = 500u64.saturating_mul(1 << failures.saturating_sub(1).min(5)).min(15_000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{
            Mutex,
            atomic::{AtomicU32, Ordering},
        },
    };

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::providers::Mode;

    /// A provider that answers from scripts: each call takes the next answer; when a script
    /// runs out, `submit` accepts task `fake-1` and `poll` says pending.
    struct Fake {
        submits: Mutex<VecDeque<Result<Submission, ProviderError>>>,
        polls: Mutex<VecDeque<Result<Poll, ProviderError>>>,
        submit_calls: AtomicU32,
        poll_calls: AtomicU32,
        /// Task ids that were polled, in order.
        polled: Mutex<Vec<String>>,
    }

    const POLL_INTERVAL: Duration = Duration::from_secs(7);

    impl Fake {
        fn new(
            submits: impl IntoIterator<Item = Result<Submission, ProviderError>>,
            polls: impl IntoIterator<Item = Result<Poll, ProviderError>>,
        ) -> Self {
            Fake {
                submits: Mutex::new(submits.into_iter().collect()),
                polls: Mutex::new(polls.into_iter().collect()),
                submit_calls: AtomicU32::new(0),
                poll_calls: AtomicU32::new(0),
                polled: Mutex::default(),
            }
        }

        fn submit_calls(&self) -> u32 {
            self.submit_calls.load(Ordering::SeqCst)
        }

        fn poll_calls(&self) -> u32 {
            self.poll_calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Provider for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn submit(&self, _request: &GenerationRequest) -> Result<Submission, ProviderError> {
            self.submit_calls.fetch_add(1, Ordering::SeqCst);
            self.submits.lock().expect("the fake's lock").pop_front().unwrap_or_else(|| Ok(task("fake-1")))
        }

        async fn poll(&self, _request: &GenerationRequest, submission: &Submission) -> Result<Poll, ProviderError> {
            self.poll_calls.fetch_add(1, Ordering::SeqCst);
            self.polled.lock().expect("the fake's lock").push(submission.task_id.clone());
            self.polls.lock().expect("the fake's lock").pop_front().unwrap_or(Ok(Poll::Pending { progress: None }))
        }

        fn poll_interval(&self, _attempt: u32) -> Duration {
            POLL_INTERVAL
        }
    }

    /// Records what the driver hands over; lets the drive go on unless a test says otherwise.
    struct Recorder {
        submitted: Vec<Submission>,
        progress: Vec<f32>,
        accept_submission: bool,
        accept_progress: bool,
    }

    impl Recorder {
        fn new() -> Self {
            Recorder { submitted: Vec::new(), progress: Vec::new(), accept_submission: true, accept_progress: true }
        }
    }

    impl DriveHooks for Recorder {
        async fn submitted(&mut self, submission: &Submission) -> anyhow::Result<bool> {
            self.submitted.push(submission.clone());
            Ok(self.accept_submission)
        }

        async fn progress(&mut self, progress: f32) -> anyhow::Result<bool> {
            self.progress.push(progress);
            Ok(self.accept_progress)
        }
    }

    fn task(id: &str) -> Submission {
        Submission { task_id: id.into(), polling_url: None, cost: None, submitted_at_ms: 0 }
    }

    fn request() -> GenerationRequest {
        GenerationRequest {
            endpoint: "fake-pro".into(),
            model: "fake".into(),
            model_name: "Fake".into(),
            prompt: "a lighthouse at dusk".into(),
            seed: 7,
            mode: Mode::TwoK,
            aspect_ratio: "1:1".into(),
            width: 1408,
            height: 1408,
            reference_image: None,
        }
    }

    fn ready() -> Result<Poll, ProviderError> {
        Ok(Poll::Ready(Image {
            bytes: Bytes::from_static(b"png"),
            content_type: "image/png".into(),
            width: 1408,
            height: 1408,
            usage_usd: None,
        }))
    }

    fn pending(progress: f32) -> Result<Poll, ProviderError> {
        Ok(Poll::Pending { progress: Some(progress) })
    }

    fn transient() -> ProviderError {
        ProviderError::Transient("503".into())
    }

    const LIMITS: DriveLimits = DriveLimits { max_transient: 3 };

    /// Drives `request()` through `fake` with a deadline `within` from now.
    async fn run(
        fake: &Fake,
        within: Duration,
        cancel: &CancellationToken,
        resume: Option<Submission>,
        hooks: &mut Recorder,
    ) -> Driven {
        let request = request();
        let job = Drive {
            provider: fake,
            request: &request,
            deadline: Instant::now() + within,
            cancel,
            limits: LIMITS,
            resume,
        };
        drive(job, hooks).await.expect("the hooks never fail here")
    }

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= Duration::from_millis(500) && backoff(1) < Duration::from_millis(700));
        assert!(backoff(3) >= Duration::from_millis(2000));
        assert!(backoff(30) <= Duration::from_millis(15_000 + 3_751));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_submit_failures_are_retried_with_backoff_then_the_image_arrives() {
        let fake = Fake::new([Err(transient()), Err(transient()), Ok(task("t-1"))], [pending(0.5), ready()]);
        let mut hooks = Recorder::new();
        let start = Instant::now();
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut hooks).await;
        assert!(matches!(&driven, Driven::Image(image) if image.content_type == "image/png"), "{driven:?}");
        assert_eq!(fake.submit_calls(), 3);
        assert_eq!(fake.poll_calls(), 2);
        assert_eq!(hooks.submitted, vec![task("t-1")], "the new task is handed over once, before polling");
        assert_eq!(*fake.polled.lock().expect("the fake's lock"), vec!["t-1", "t-1"]);
        // Backoff after failures 1 and 2 (0.5 s and 1 s, plus up to a quarter of jitter), then
        // two poll intervals.
        let elapsed = start.elapsed();
        let least = Duration::from_millis(1500) + 2 * POLL_INTERVAL;
        assert!(elapsed >= least && elapsed <= least + Duration::from_millis(375), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn moderated_at_submission_ends_without_polling() {
        let fake = Fake::new([Err(ProviderError::Moderated("nsfw".into()))], []);
        let mut hooks = Recorder::new();
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut hooks).await;
        assert!(matches!(&driven, Driven::Moderated(why) if why == "nsfw"), "{driven:?}");
        assert_eq!(fake.poll_calls(), 0);
        assert!(hooks.submitted.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_at_submission_fails() {
        let fake = Fake::new([Err(ProviderError::Fatal("402 no credit".into()))], []);
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut Recorder::new()).await;
        assert!(matches!(&driven, Driven::Failed(why) if why == "402 no credit"), "{driven:?}");
        assert_eq!((fake.submit_calls(), fake.poll_calls()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_at_poll_fails() {
        let fake = Fake::new([], [pending(0.2), Err(ProviderError::Fatal("422 bad request".into()))]);
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut Recorder::new()).await;
        assert!(matches!(&driven, Driven::Failed(why) if why == "422 bad request"), "{driven:?}");
        assert_eq!(fake.poll_calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_poll_says_maps_to_the_outcome() {
        let cases = [
            (Ok(Poll::Moderated { reason: "result flagged".into() }), "moderated: result flagged"),
            (Ok(Poll::Failed { reason: "task error".into() }), "failed: task error"),
            (Err(ProviderError::Moderated("late filter".into())), "moderated: late filter"),
        ];
        for (answer, expected) in cases {
            let fake = Fake::new([], [answer]);
            let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut Recorder::new()).await;
            let got = match &driven {
                Driven::Moderated(why) => format!("moderated: {why}"),
                Driven::Failed(why) => format!("failed: {why}"),
                other => format!("{other:?}"),
            };
            assert_eq!(got, expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_transient_failures_in_a_row_fail_the_drive() {
        // At submission: the first answer plus `max_transient` retries, then it gives up.
        let fake = Fake::new(std::iter::repeat_with(|| Err(transient())).take(10), []);
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut Recorder::new()).await;
        assert!(
            matches!(&driven, Driven::Unavailable(why) if why == "the provider kept failing (4 attempts): 503"),
            "{driven:?}"
        );
        assert_eq!((fake.submit_calls(), fake.poll_calls()), (4, 0));

        // While polling, a pending answer resets the count.
        let polls = [Err(transient()), Err(transient()), Err(transient()), pending(0.1)]
            .into_iter()
            .chain(std::iter::repeat_with(|| Err(transient())).take(10));
        let fake = Fake::new([], polls);
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut Recorder::new()).await;
        assert!(matches!(&driven, Driven::Unavailable(why) if why.contains("(4 attempts)")), "{driven:?}");
        assert_eq!(fake.poll_calls(), 4 + 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_pending_forever_times_out_at_the_deadline() {
        let fake = Fake::new([], []);
        let start = Instant::now();
        let driven = run(&fake, Duration::from_secs(60), &CancellationToken::new(), None, &mut Recorder::new()).await;
        assert!(matches!(&driven, Driven::TimedOut(why) if why == NO_IMAGE_IN_TIME), "{driven:?}");
        // Polls at 7 s, 14 s … 56 s; the last wait is cut to the deadline, and nothing sleeps
        // past it.
        assert_eq!(fake.poll_calls(), 8);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_never_accepts_times_out_at_the_deadline() {
        let fake = Fake::new(std::iter::repeat_with(|| Err(transient())).take(3), []);
        let start = Instant::now();
        // Backoff after the first failure is at least 0.5 s: the deadline comes first.
        let driven =
            run(&fake, Duration::from_millis(400), &CancellationToken::new(), None, &mut Recorder::new()).await;
        assert!(matches!(&driven, Driven::TimedOut(why) if why == NOT_ACCEPTED_IN_TIME), "{driven:?}");
        assert_eq!(fake.submit_calls(), 1);
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_ends_before_submitting() {
        let fake = Fake::new([], []);
        let driven = run(&fake, Duration::ZERO, &CancellationToken::new(), None, &mut Recorder::new()).await;
        assert!(matches!(driven, Driven::TimedOut(_)), "{driven:?}");
        assert_eq!((fake.submit_calls(), fake.poll_calls()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_mid_poll_stops_at_once() {
        let fake = Fake::new([], []);
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                cancel.cancel();
            })
        };
        let start = Instant::now();
        let driven = run(&fake, TEN_MINUTES, &cancel, None, &mut Recorder::new()).await;
        assert!(matches!(driven, Driven::Stopped), "{driven:?}");
        // One poll at 7 s; the wait for the second one (due at 14 s) ends at the cancellation.
        assert_eq!(fake.poll_calls(), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        canceller.await.expect("canceller");
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_during_submit_backoff_stops_without_submitting_again() {
        let fake = Fake::new([Err(transient())], []);
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                cancel.cancel();
            })
        };
        let mut hooks = Recorder::new();
        let driven = run(&fake, TEN_MINUTES, &cancel, None, &mut hooks).await;
        assert!(matches!(driven, Driven::Stopped), "{driven:?}");
        assert_eq!((fake.submit_calls(), fake.poll_calls()), (1, 0));
        assert!(hooks.submitted.is_empty());
        canceller.await.expect("canceller");

        // Already cancelled: nothing is sent to the provider.
        let fake = Fake::new([], []);
        let driven = run(&fake, TEN_MINUTES, &cancel, None, &mut Recorder::new()).await;
        assert!(matches!(driven, Driven::Stopped), "{driven:?}");
        assert_eq!((fake.submit_calls(), fake.poll_calls()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorded_submission_is_resumed_without_a_second_submit() {
        let fake = Fake::new([], [pending(0.5), ready()]);
        let mut hooks = Recorder::new();
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), Some(task("recorded")), &mut hooks).await;
        assert!(matches!(driven, Driven::Image(_)), "{driven:?}");
        assert_eq!(fake.submit_calls(), 0);
        assert_eq!(*fake.polled.lock().expect("the fake's lock"), vec!["recorded", "recorded"]);
        assert!(hooks.submitted.is_empty(), "a resumed task is already recorded");
        assert_eq!(hooks.progress, vec![0.5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_submission_the_caller_cannot_record_stops_without_polling() {
        let fake = Fake::new([Ok(task("t-2"))], [ready()]);
        let mut hooks = Recorder { accept_submission: false, ..Recorder::new() };
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut hooks).await;
        assert!(matches!(driven, Driven::Stopped), "{driven:?}");
        assert_eq!(hooks.submitted, vec![task("t-2")]);
        assert_eq!(fake.poll_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_reported_in_steps_of_five_percent() {
        let polls = [pending(0.1), pending(0.12), Ok(Poll::Pending { progress: None }), pending(0.2), pending(0.24)];
        let fake = Fake::new([], polls.into_iter().chain([ready()]));
        let mut hooks = Recorder::new();
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut hooks).await;
        assert!(matches!(driven, Driven::Image(_)), "{driven:?}");
        assert_eq!(hooks.progress, vec![0.1, 0.2]);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_the_caller_cannot_record_stops_the_drive() {
        let fake = Fake::new([], [pending(0.3), ready()]);
        let mut hooks = Recorder { accept_progress: false, ..Recorder::new() };
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut hooks).await;
        assert!(matches!(driven, Driven::Stopped), "{driven:?}");
        assert_eq!(fake.poll_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hook_error_ends_the_drive_with_that_error() {
        struct Broken;
        impl DriveHooks for Broken {
            async fn submitted(&mut self, _submission: &Submission) -> anyhow::Result<bool> {
                anyhow::bail!("database down")
            }
        }
        let fake = Fake::new([], [ready()]);
        let request = request();
        let cancel = CancellationToken::new();
        let job = Drive {
            provider: &fake,
            request: &request,
            deadline: Instant::now() + TEN_MINUTES,
            cancel: &cancel,
            limits: LIMITS,
            resume: None,
        };
        let err = drive(job, &mut Broken).await.expect_err("the hook's error");
        assert_eq!(err.to_string(), "database down");
        assert_eq!(fake.poll_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_that_keeps_failing_falls_through_to_the_next_one() {
        let first = Arc::new(Fake::new(std::iter::repeat_with(|| Err(transient())).take(10), []));
        let second = Arc::new(Fake::new([], [ready()]));
        let plan: Vec<(Route, Arc<dyn Provider>)> = vec![
            (Route::new("openai", "gpt-image-2"), first.clone()),
            (Route::new("fal", "openai/gpt-image-2"), second.clone()),
        ];
        let cancel = CancellationToken::new();
        let mut hooks = Recorder::new();
        let (driven, route) =
            drive_routes(&plan, &request(), Instant::now() + TEN_MINUTES, &cancel, LIMITS, None, &mut hooks)
                .await
                .expect("drive");
        assert!(matches!(driven, Driven::Image(_)), "{driven:?}");
        assert_eq!(route.map(|r| r.to_string()).as_deref(), Some("fal:openai/gpt-image-2"));
        // The first route got 1 + MAX_TRANSIENT_BEFORE_FALLTHROUGH tries, not the job's limit.
        assert_eq!(first.submit_calls(), 1 + MAX_TRANSIENT_BEFORE_FALLTHROUGH);
        assert_eq!((second.submit_calls(), second.poll_calls()), (1, 1));

        // A fatal answer (a refusal) does not fall through: another route would refuse too.
        let first = Arc::new(Fake::new([Err(ProviderError::Moderated("blocked".into()))], []));
        let second = Arc::new(Fake::new([], [ready()]));
        let plan: Vec<(Route, Arc<dyn Provider>)> =
            vec![(Route::new("openai", "a"), first.clone()), (Route::new("fal", "b"), second.clone())];
        let (driven, route) =
            drive_routes(&plan, &request(), Instant::now() + TEN_MINUTES, &cancel, LIMITS, None, &mut hooks)
                .await
                .expect("drive");
        assert!(matches!(driven, Driven::Moderated(_)), "{driven:?}");
        assert_eq!(route.map(|r| r.via).as_deref(), Some("openai"));
        assert_eq!(second.submit_calls(), 0);

        // A recorded task on the second route is resumed there.
        let first = Arc::new(Fake::new([], [ready()]));
        let second = Arc::new(Fake::new([], [ready()]));
        let plan: Vec<(Route, Arc<dyn Provider>)> =
            vec![(Route::new("openai", "a"), first.clone()), (Route::new("fal", "b"), second.clone())];
        let resume = Some(("fal:b".to_string(), task("t-9")));
        let (driven, _) =
            drive_routes(&plan, &request(), Instant::now() + TEN_MINUTES, &cancel, LIMITS, resume, &mut hooks)
                .await
                .expect("drive");
        assert!(matches!(driven, Driven::Image(_)), "{driven:?}");
        assert_eq!((first.submit_calls(), first.poll_calls(), second.submit_calls()), (0, 0, 0));
        assert_eq!(*second.polled.lock().expect("the fake's lock"), vec!["t-9"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_waits_as_long_as_the_provider_asks() {
        let limited = |secs: Option<u64>| ProviderError::RateLimited {
            message: "429".into(),
            retry_after: secs.map(Duration::from_secs),
        };
        let fake = Fake::new([Err(limited(Some(20))), Err(limited(None)), Ok(task("t-1"))], [ready()]);
        let start = Instant::now();
        let driven = run(&fake, TEN_MINUTES, &CancellationToken::new(), None, &mut Recorder::new()).await;
        assert!(matches!(driven, Driven::Image(_)), "{driven:?}");
        // 20 s as asked, then the plain backoff after the second failure (1–1.25 s), then a poll.
        let elapsed = start.elapsed();
        let least = Duration::from_secs(21) + POLL_INTERVAL;
        assert!(elapsed >= least && elapsed <= least + Duration::from_millis(250), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_hooks_drive_to_the_image() {
        let fake = Fake::new([], [ready()]);
        let request = request();
        let cancel = CancellationToken::new();
        let job = Drive {
            provider: &fake,
            request: &request,
            deadline: Instant::now() + TEN_MINUTES,
            cancel: &cancel,
            limits: LIMITS,
            resume: None,
        };
        assert!(matches!(drive(job, &mut NoHooks).await.expect("drive"), Driven::Image(_)));
    }
}
