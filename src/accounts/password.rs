//! Password hashing: argon2id with the OWASP parameters (19 MiB, 2 passes, 1 lane), run on a
//! small pool of dedicated, lower-priority threads: a hash (tens of milliseconds of CPU) never
//! stalls the async workers, and when the CPU is busy the scheduler serves page requests first
//! (logins get slower before pages do).

use std::sync::{Mutex, OnceLock, mpsc};

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

/// How many hashing threads run at once, and their niceness (Linux: 0 is normal, 19 lowest).
const THREADS: usize = 2;
const NICENESS_PRIORITY: u8 = 25; // thread-priority's 0..99 scale; 25 maps to nice 10

fn pool() -> &'static Mutex<mpsc::Sender<Job>> {
    static POOL: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("password-{i}")).spawn(move || {
                if let Ok(value) = thread_priority::ThreadPriorityValue::try_from(NICENESS_PRIORITY)
                    && let Err(err) = thread_priority::set_current_thread_priority(
                        thread_priority::ThreadPriority::Crossplatform(value),
                    )
                {
                    tracing::debug!("password thread keeps normal priority: {err:?}");
                }
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
        Mutex::new(tx)
    })
}

/// Runs `work` on a password thread and waits for its result.
async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(work());
    });
    pool()
        .lock()
        .map_err(|_| anyhow::anyhow!("password pool poisoned"))?
        .send(job)
        .map_err(|_| anyhow::anyhow!("password threads stopped"))?;
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
        let phc = match stored {
            Some(phc) => phc,
            None => dummy_hash().to_string(),
        };
        let Ok(parsed) = PasswordHash::new(&phc) else {
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

    #[test]
    fn length_limits_count_characters() {
        assert!(validate("1234567").is_err());
        assert!(validate("12345678").is_ok());
        assert!(validate(&"é".repeat(128)).is_ok());
        assert!(validate(&"é".repeat(129)).is_err());
    }
}
