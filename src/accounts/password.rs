//! Password hashing: argon2id with the OWASP parameters (19 MiB, 2 passes, 1 lane), run on
//! dedicated threads, never on the async workers. A hash (tens of milliseconds of CPU) starts
//! on idle-priority threads, so page requests always come first; one that has not finished
//! after a second (the cores are saturated) runs on a nice-10 thread too, so a log-in gets
//! slower under load but never starves.

use std::{
    sync::{Arc, Mutex, OnceLock, mpsc},
    time::Duration,
};

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

/// Passwords are 8 to 128 characters.
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

/// Why a new password is not acceptable, in words for the form.
pub fn validate(password: &str) -> Result<(), &'static str> {
    let len = password.chars().count();
    if len < MIN_LEN {
        Err("use at least 8 characters")
    } else if len > MAX_LEN {
        Err("use at most 128 characters")
    } else {
        Ok(())
    }
}

fn hasher() -> Argon2<'static> {
    // Argon2id v19, m=19456 KiB, t=2, p=1: the OWASP minimum recommendation.
    Argon2::default()
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run jobs at one scheduling priority.
struct Lane {
    sender: Mutex<mpsc::Sender<Job>>,
}

impl Lane {
    /// Starts `threads` threads named `name-N` that lower their own priority with `lower`.
    fn start(name: &str, threads: usize, lower: fn()) -> Lane {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                lower();
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(err) = spawned {
                tracing::error!("could not start a password hashing thread: {err}");
            }
        }
        Lane { sender: Mutex::new(tx) }
    }

    fn send(&self, job: Job) -> anyhow::Result<()> {
        self.sender
            .lock()
            .map_err(|_| anyhow::anyhow!("password threads poisoned"))?
            .send(job)
            .map_err(|_| anyhow::anyhow!("password threads stopped"))
    }
}

/// Hashing threads of the idle lane, and of the standby lane (each hash holds 19 MiB while it
/// runs: at most three at once).
const THREADS: usize = 2;
const STANDBY_THREADS: usize = 1;
/// A hash not done after this on the idle lane is run on the standby lane too. Measured with
/// `PHASES="5" bench/run` (10 logins/s while wrk saturates a page): the page's p99 rose 2.5×
/// with 250 ms here (most hashes moved to nice 10), 1.8× with a second; log-ins' p99 1.4 s.
const STANDBY_AFTER: Duration = Duration::from_secs(1);

/// The lane every hash starts on: on Linux at `SCHED_IDLE`, so a hash runs on CPU time no
/// request wants and never holds a core a page's thread wakes up for (at nice 10 it held one
/// for a time slice, and the pages' p99 doubled during 10 logins a second).
fn idle_lane() -> &'static Lane {
    static LANE: OnceLock<Lane> = OnceLock::new();
    LANE.get_or_init(|| Lane::start("password-idle", THREADS, idle_priority))
}

/// The lane a hash also runs on once it waited [`STANDBY_AFTER`] on the idle one: at nice 10,
/// it gets its share of a saturated CPU (idle-class threads get almost none, and a log-in would
/// wait past the request deadline while pages keep the cores busy). Whichever finishes first
/// answers; the other copy ends on idle CPU time, or at once if it had not started.
fn standby_lane() -> &'static Lane {
    static LANE: OnceLock<Lane> = OnceLock::new();
    LANE.get_or_init(|| Lane::start("password", STANDBY_THREADS, nice_priority))
}

fn idle_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        if let Err(err) = thread_priority::unix::set_thread_priority_and_policy(
            thread_priority::unix::thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) {
            tracing::debug!("idle password thread keeps its priority: {err:?}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    nice_priority();
}

fn nice_priority() {
    // thread-priority's 0..99 scale; 25 maps to nice 10.
    if let Ok(value) = thread_priority::ThreadPriorityValue::try_from(25u8)
        && let Err(err) =
            thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Crossplatform(value))
    {
        tracing::debug!("password thread keeps normal priority: {err:?}");
    }
}

/// Runs `work` on the idle lane and, if it is not done within [`STANDBY_AFTER`], on the
/// standby lane as well; answers with the first result.
async fn run<T: Send + 'static>(work: impl Fn() -> T + Send + Sync + 'static) -> anyhow::Result<T> {
    run_on(idle_lane(), standby_lane(), STANDBY_AFTER, work).await
}

/// Where the result of a job run on two lanes goes: the first to finish takes the sender.
type Answer<T> = Arc<Mutex<Option<tokio::sync::oneshot::Sender<T>>>>;

/// One lane's copy of a job: runs `work` unless the other copy answered already.
fn job<T: Send + 'static>(work: Arc<impl Fn() -> T + Send + Sync + 'static>, answer: Answer<T>) -> Job {
    Box::new(move || {
        if answer.lock().map(|a| a.is_none()).unwrap_or(true) {
            return;
        }
        let result = work();
        if let Some(tx) = answer.lock().ok().and_then(|mut a| a.take()) {
            let _ = tx.send(result);
        }
    })
}

async fn run_on<T: Send + 'static>(
    first: &Lane,
    standby: &Lane,
    after: Duration,
    work: impl Fn() -> T + Send + Sync + 'static,
) -> anyhow::Result<T> {
    let work = Arc::new(work);
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let answer: Answer<T> = Arc::new(Mutex::new(Some(tx)));
    first.send(job(work.clone(), answer.clone()))?;
    tokio::select! {
        result = &mut rx => return result.map_err(|_| anyhow::anyhow!("password thread dropped the job")),
        _ = tokio::time::sleep(after) => {}
    }
    standby.send(job(work, answer))?;
    rx.await.map_err(|_| anyhow::anyhow!("password thread dropped the job"))
}

/// Hashes a password to a PHC string (with a fresh random salt).
pub async fn hash(password: String) -> anyhow::Result<String> {
    run(move || {
        hasher().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("hashing: {e}"))
    })
    .await?
}

/// Verifies `password` against `stored`; with no stored hash (unknown email) it verifies against
/// a dummy hash, so both cases take the same time, and answers false.
pub async fn verify(password: String, stored: Option<String>) -> anyhow::Result<bool> {
    run(move || {
        let known = stored.is_some();
        let phc = stored.as_deref().unwrap_or_else(|| dummy_hash());
        let Ok(parsed) = PasswordHash::new(phc) else {
            tracing::error!("a stored password hash does not parse");
            return Ok(false);
        };
        let ok = hasher().verify_password(password.as_bytes(), &parsed).is_ok();
        Ok(ok && known)
    })
    .await?
}

/// Computes the dummy hash ahead of the first log-in attempt (call at start-up), so even the
/// first unknown-email attempt takes no longer than a known one.
pub async fn warm_up() {
    let _ = run(dummy_hash).await;
}

/// A real argon2id hash (same parameters as ours) of a random password nobody knows.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let secret: [u8; 32] = rand::random();
        hasher().hash_password(&secret).map(|h| h.to_string()).unwrap_or_else(|_| {
            // Hashing 32 bytes with the default parameters cannot fail; keep a valid fallback.
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q".into()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let phc = hash("correct horse".into()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse".into(), Some(phc.clone())).await.expect("verify"));
        assert!(!verify("wrong horse".into(), Some(phc)).await.expect("verify"));
        assert!(!verify("anything".into(), None).await.expect("verify"));
    }

    /// A hash stuck on its first lane (here: its only thread is busy) is answered by the
    /// standby lane; one the first lane answers is not run again.
    #[tokio::test]
    async fn a_hash_that_waits_too_long_runs_on_the_standby_lane() {
        let first = Lane::start("test-first", 1, || {});
        let standby = Lane::start("test-standby", 1, || {});
        let (release, blocked) = mpsc::channel::<()>();
        first
            .send(Box::new(move || {
                let _ = blocked.recv();
            }))
            .expect("block the first lane");
        let thread = || std::thread::current().name().map(str::to_string);
        let ran_on = run_on(&first, &standby, Duration::from_millis(10), thread).await.expect("answered");
        assert_eq!(ran_on.as_deref(), Some("test-standby-0"));
        release.send(()).expect("unblock");

        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        let ran_on = run_on(&first, &standby, Duration::from_secs(600), move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            thread()
        })
        .await
        .expect("answered");
        assert_eq!(ran_on.as_deref(), Some("test-first-0"));
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn length_limits_count_characters() {
        assert!(validate("1234567").is_err());
        assert!(validate("12345678").is_ok());
        assert!(validate(&"é".repeat(128)).is_ok());
        assert!(validate(&"é".repeat(129)).is_err());
    }
}
