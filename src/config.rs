//! Configuration: every setting the process reads from its environment (and an optional `.env`),
//! parsed once at start-up into a typed [`Config`]. An invalid value stops start-up with a message
//! that names the variable and what it expected.

use std::{fmt, net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use url::Url;

/// A secret string (API keys, webhook secrets) whose `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How sign-up and log-in are throttled (`accounts::rate_limit`; tests raise the limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Sign-up or log-in attempts per minute from one address (each counted separately).
    pub attempts_per_minute: u32,
    /// Failed log-ins per (email, address), and per (email, device), before backing off.
    pub free_failures: u32,
    /// Failed log-ins from one address, all emails together, before backing off.
    pub free_failures_per_address: u32,
    /// The first wait after the free failures; each further failure doubles it (at most 15 min).
    pub base_backoff: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            attempts_per_minute: 30,
            free_failures: 5,
            free_failures_per_address: 20,
            base_backoff: Duration::from_secs(1),
        }
    }
}

/// How webhooks are delivered (`webhooks::delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookSettings {
    /// `FACEOFF_WEBHOOK_ALLOW_PRIVATE`, for development and tests only: endpoints may be plain
    /// `http://` and resolve to loopback or private addresses. Off in production: only `https://`
    /// URLs whose every address is public are called (SSRF).
    pub allow_private: bool,
    /// How long one delivery may take (connecting, sending, the answer's headers and body).
    pub timeout: Duration,
    /// How often each process looks for due deliveries when no notification woke it.
    pub poll: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings { allow_private: false, timeout: Duration::from_secs(10), poll: Duration::from_secs(5) }
    }
}

/// Per-user limits of one source of runs (the studio or API keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Jobs of a user from this source that run at once; more wait in the queue (`jobs::claim`).
    pub max_running: u32,
    /// Jobs of a user from this source waiting in the queue; a submission that would go over is
    /// refused with 429 (`runs::create`).
    pub max_queued: u32,
}

/// The fair queue (`jobs::queue`): per-user limits and backpressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// `FACEOFF_STUDIO_MAX_RUNNING_JOBS`, `FACEOFF_STUDIO_MAX_QUEUED_JOBS`.
    pub studio: JobLimits,
    /// `FACEOFF_API_MAX_RUNNING_JOBS`, `FACEOFF_API_MAX_QUEUED_JOBS`.
    pub api: JobLimits,
    /// `FACEOFF_QUEUE_MAX_AGE_SECS`: when the oldest queued job has waited longer, new API runs
    /// get 503 with `Retry-After` (the studio keeps working). `None`: `off`.
    pub max_age: Option<Duration>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            studio: JobLimits { max_running: 8, max_queued: 40 },
            api: JobLimits { max_running: 16, max_queued: 1000 },
            max_age: Some(Duration::from_secs(600)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`; `None` means "find a local server or start a private cluster".
    pub database_url: Option<Secret>,
    /// `DATABASE_READ_URL`: a read replica (or a read-only role) for the pages that read only
    /// the catalog and its public boards (`db::ReadPool`). `None`: they use the primary.
    pub database_read_url: Option<Secret>,
    /// `FACEOFF_REDIS_URL`: the shared store of the global rate limits
    /// (`accounts::rate_limit::store`). `None`: they are counted in PostgreSQL.
    pub redis_url: Option<Secret>,
    pub addr: SocketAddr,
    pub public_url: Url,
    pub data_dir: PathBuf,
    pub storage_url: String,
    pub secure_cookies: bool,
    pub signup_credits: i64,
    pub workers: usize,
    pub sandbox_latency: Duration,
    pub sandbox_fail: Vec<String>,
    /// `FACEOFF_SANDBOX_IMAGE`: a JPEG, PNG or WebP file the sandbox returns for every job
    /// instead of rendering one (a stored image at once: benchmarks of the queue itself).
    pub sandbox_image: Option<PathBuf>,
    pub bfl_api_key: Option<Secret>,
    pub bfl_api_url: Url,
    /// `OPENAI_API_KEY`, `OPENAI_API_URL`: the OpenAI Images API.
    pub openai_api_key: Option<Secret>,
    pub openai_api_url: Url,
    /// `GEMINI_API_KEY`, `GEMINI_API_URL`: Google's Gemini API (image output).
    pub gemini_api_key: Option<Secret>,
    pub gemini_api_url: Url,
    /// `FAL_KEY`, `FAL_QUEUE_URL`, `FAL_API_URL`: fal's queue (generation) and platform API
    /// (the key check).
    pub fal_key: Option<Secret>,
    pub fal_queue_url: Url,
    pub fal_api_url: Url,
    /// `REPLICATE_API_TOKEN`, `REPLICATE_API_URL`: Replicate's predictions API.
    pub replicate_api_token: Option<Secret>,
    pub replicate_api_url: Url,
    pub stripe_secret_key: Option<Secret>,
    pub stripe_webhook_secret: Option<Secret>,
    pub stripe_api_url: Url,
    pub log_format: LogFormat,
    /// How long start-up keeps retrying an unreachable database (`FACEOFF_DB_WAIT_SECS`).
    pub db_wait: Duration,
    /// `FACEOFF_CATALOG_FILE`: the catalog loaded at every start (and by `faceoff catalog load`
    /// without a path). `None`: `catalog/catalog.toml`, or the copy compiled into the binary.
    pub catalog_file: Option<PathBuf>,
    /// `FACEOFF_CLIENT_IP_HEADER`: behind a reverse proxy, the header it writes the client's
    /// address to (`X-Forwarded-For`, `X-Real-IP`); rate limits count per that address.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// How often a live run page reloads its run even without a notification (a safety net).
    pub live_refresh: Duration,
    /// `FACEOFF_METRICS_ADDR`: where `/metrics` is served (`None`: `off`, not served).
    pub metrics_addr: Option<SocketAddr>,
    /// Sign-up and log-in throttling (see `accounts::rate_limit`).
    pub throttle: ThrottleSettings,
    /// `FACEOFF_API_RATE_LIMIT`: JSON API requests per minute per key (`None`: `off`).
    pub api_rate_limit: Option<NonZeroU32>,
    /// Webhook delivery (`FACEOFF_WEBHOOK_ALLOW_PRIVATE`; the rest is fixed outside tests).
    pub webhooks: WebhookSettings,
    /// The fair queue's per-user limits and backpressure.
    pub queue: QueueSettings,
    /// The arena's trust rules and recompute schedule (`FACEOFF_ARENA_*`).
    pub arena: ArenaSettings,
    /// Outgoing mail (`FACEOFF_SMTP_URL`, `FACEOFF_MAIL_FROM`).
    pub mail: MailSettings,
}

/// The arena's settings: which votes count, when an entry is ranked, and how often boards are
/// recomputed.
#[derive(Debug, Clone, Copy)]
pub struct ArenaSettings {
    /// `FACEOFF_ARENA_MIN_ACCOUNT_AGE_HOURS` (24): votes of younger accounts are held back.
    pub min_account_age: time::Duration,
    /// `FACEOFF_ARENA_DAILY_CAP` (30): counted votes per account, per board, per UTC day.
    pub daily_cap: i64,
    /// `FACEOFF_ARENA_MIN_VOTES` (30): votes an entry needs before it is ranked.
    pub min_votes: u64,
    /// Bootstrap replicates per board (200).
    pub bootstrap: usize,
    /// `FACEOFF_ARENA_RECOMPUTE_SECS` (600): boards are recomputed at least this often…
    pub recompute_every: time::Duration,
    /// …and once this many new votes arrived (20).
    pub recompute_after: i64,
}

impl Default for ArenaSettings {
    fn default() -> Self {
        ArenaSettings {
            min_account_age: time::Duration::hours(24),
            daily_cap: 30,
            min_votes: 30,
            bootstrap: 200,
            recompute_every: time::Duration::minutes(10),
            recompute_after: 20,
        }
    }
}

/// How mail is sent (`mail`): through SMTP when `smtp_url` is set, otherwise written as `.eml`
/// files under `{FACEOFF_DATA_DIR}/outbox/` with their links logged.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `FACEOFF_SMTP_URL`: `smtp://host:port` (plain, for a local catcher),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS) or `smtps://user:pass@host:465` (TLS).
    pub smtp_url: Option<Secret>,
    /// `FACEOFF_MAIL_FROM`: the sender, `Name <address>` or `address`.
    pub from: String,
    /// How often each process looks for due mail when no notification woke it.
    pub poll: Duration,
    /// The wait after the first failed attempt (doubling after each next one, up to an hour).
    pub first_retry: Duration,
}

impl MailSettings {
    /// Whether mail really leaves the machine (SMTP is configured).
    pub fn configured(&self) -> bool {
        self.smtp_url.is_some()
    }
}

/// A configuration error: which variable, what it held, what was expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid {name}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl Config {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is reported by dotenvy on first use.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any lookup function (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { get: &get };
        let addr: SocketAddr = env.parsed(
            "FACEOFF_ADDR",
            "a socket address such as 127.0.0.1:3000",
            "127.0.0.1:3000".parse().expect("valid default"),
        )?;
        let public_url = match env.non_empty("FACEOFF_PUBLIC_URL") {
            Some(raw) => parse_http_url("FACEOFF_PUBLIC_URL", &raw)?,
            None => {
                let host =
                    if addr.ip().is_unspecified() { format!("localhost:{}", addr.port()) } else { addr.to_string() };
                Url::parse(&format!("http://{host}")).map_err(|_| ConfigError {
                    name: "FACEOFF_ADDR",
                    value: addr.to_string(),
                    expected: "an address usable in a URL",
                })?
            }
        };
        let data_dir = PathBuf::from(env.non_empty("FACEOFF_DATA_DIR").unwrap_or_else(|| ".faceoff".into()));
        let storage_url = match env.non_empty("FACEOFF_STORAGE_URL") {
            Some(raw) => {
                let ok = raw.starts_with("file://") || raw.starts_with("s3://") || raw == "memory://";
                if !ok {
                    return Err(ConfigError {
                        name: "FACEOFF_STORAGE_URL",
                        value: raw,
                        expected: "file:///path, s3://bucket/prefix or memory://",
                    });
                }
                raw
            }
            None => format!("file://{}", absolute(&data_dir.join("media")).display()),
        };
        let signup_credits: i64 = env.parsed("FACEOFF_SIGNUP_CREDITS", "a whole number of credits, 0 or more", 100)?;
        if signup_credits < 0 {
            return Err(ConfigError {
                name: "FACEOFF_SIGNUP_CREDITS",
                value: signup_credits.to_string(),
                expected: "a whole number of credits, 0 or more",
            });
        }
        let workers: usize = env.parsed("FACEOFF_WORKERS", "a number of concurrent jobs, 0 or more", 4)?;
        let latency_ms: u64 = env.parsed("FACEOFF_SANDBOX_LATENCY_MS", "milliseconds, e.g. 1500", 1500)?;
        let sandbox_fail = env
            .non_empty("FACEOFF_SANDBOX_FAIL")
            .map(|raw| raw.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let bfl_api_url = match env.non_empty("BFL_API_URL") {
            Some(raw) => parse_http_url("BFL_API_URL", &raw)?,
            None => Url::parse("https://api.bfl.ai").expect("valid default"),
        };
        // Base URLs of provider APIs: paths are joined onto them, so they end with `/`.
        let url = |name: &'static str, default: &str| -> Result<Url, ConfigError> {
            let mut url = match env.non_empty(name) {
                Some(raw) => parse_http_url(name, &raw)?,
                None => Url::parse(default).expect("valid default"),
            };
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            Ok(url)
        };
        let openai_api_url = url("OPENAI_API_URL", "https://api.openai.com/v1/")?;
        let gemini_api_url = url("GEMINI_API_URL", "https://generativelanguage.googleapis.com/")?;
        let fal_queue_url = url("FAL_QUEUE_URL", "https://queue.fal.run/")?;
        let fal_api_url = url("FAL_API_URL", "https://api.fal.ai/v1/")?;
        let replicate_api_url = url("REPLICATE_API_URL", "https://api.replicate.com/v1/")?;
        let stripe_api_url = match env.non_empty("STRIPE_API_URL") {
            Some(raw) => parse_http_url("STRIPE_API_URL", &raw)?,
            None => Url::parse("https://api.stripe.com").expect("valid default"),
        };
        let log_format = match env.non_empty("FACEOFF_LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    name: "FACEOFF_LOG_FORMAT",
                    value: other.into(),
                    expected: "pretty or json",
                });
            }
        };
        let database_read_url = match env.non_empty("DATABASE_READ_URL") {
            Some(raw)
                if (raw.starts_with("postgres://") || raw.starts_with("postgresql://"))
                    && raw.parse::<sqlx::postgres::PgConnectOptions>().is_ok() =>
            {
                Some(Secret::new(raw))
            }
            Some(_) => {
                return Err(ConfigError {
                    name: "DATABASE_READ_URL",
                    value: "(hidden)".into(),
                    expected: "a PostgreSQL URL such as postgres://reader@replica:5432/faceoff",
                });
            }
            None => None,
        };
        let redis_url = match env.non_empty("FACEOFF_REDIS_URL") {
            Some(raw) if Url::parse(&raw).is_ok_and(|u| matches!(u.scheme(), "redis" | "unix" | "redis+unix")) => {
                Some(Secret::new(raw))
            }
            Some(_) => {
                return Err(ConfigError {
                    name: "FACEOFF_REDIS_URL",
                    value: "(hidden)".into(),
                    expected: "a redis:// URL such as redis://127.0.0.1:6379/0 (or unix:///path/to/redis.sock)",
                });
            }
            None => None,
        };
        let client_ip_header = match env.non_empty("FACEOFF_CLIENT_IP_HEADER") {
            Some(raw) => Some(axum::http::HeaderName::from_bytes(raw.as_bytes()).map_err(|_| ConfigError {
                name: "FACEOFF_CLIENT_IP_HEADER",
                value: raw,
                expected: "a header name such as X-Forwarded-For",
            })?),
            None => None,
        };
        let db_wait_secs: u64 = env.parsed("FACEOFF_DB_WAIT_SECS", "seconds, e.g. 30", 30)?;
        let metrics_addr = match env.non_empty("FACEOFF_METRICS_ADDR").as_deref() {
            Some("off") => None,
            Some(raw) => Some(raw.parse().map_err(|_| ConfigError {
                name: "FACEOFF_METRICS_ADDR",
                value: raw.into(),
                expected: "a socket address such as 127.0.0.1:9464, or off",
            })?),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        };
        let api_rate_limit = match env.non_empty("FACEOFF_API_RATE_LIMIT").as_deref() {
            Some("off") => None,
            Some(raw) => Some(raw.parse::<NonZeroU32>().map_err(|_| ConfigError {
                name: "FACEOFF_API_RATE_LIMIT",
                value: raw.into(),
                expected: "requests per minute per API key (1 or more), or off",
            })?),
            None => NonZeroU32::new(600),
        };
        let webhooks = WebhookSettings {
            allow_private: env.bool("FACEOFF_WEBHOOK_ALLOW_PRIVATE", false)?,
            ..WebhookSettings::default()
        };
        let defaults = QueueSettings::default();
        let limit = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
            let value: u32 = env.parsed(name, "a number of jobs, 1 or more", default)?;
            if value == 0 {
                return Err(ConfigError { name, value: "0".into(), expected: "a number of jobs, 1 or more" });
            }
            Ok(value)
        };
        let queue = QueueSettings {
            studio: JobLimits {
                max_running: limit("FACEOFF_STUDIO_MAX_RUNNING_JOBS", defaults.studio.max_running)?,
                max_queued: limit("FACEOFF_STUDIO_MAX_QUEUED_JOBS", defaults.studio.max_queued)?,
            },
            api: JobLimits {
                max_running: limit("FACEOFF_API_MAX_RUNNING_JOBS", defaults.api.max_running)?,
                max_queued: limit("FACEOFF_API_MAX_QUEUED_JOBS", defaults.api.max_queued)?,
            },
            max_age: match env.non_empty("FACEOFF_QUEUE_MAX_AGE_SECS").as_deref() {
                Some("off") => None,
                Some(raw) => match raw.parse::<u64>() {
                    Ok(secs) if secs > 0 => Some(Duration::from_secs(secs)),
                    _ => {
                        return Err(ConfigError {
                            name: "FACEOFF_QUEUE_MAX_AGE_SECS",
                            value: raw.into(),
                            expected: "seconds (1 or more), or off",
                        });
                    }
                },
                None => defaults.max_age,
            },
        };
        let arena = ArenaSettings {
            min_account_age: time::Duration::hours(env.parsed(
                "FACEOFF_ARENA_MIN_ACCOUNT_AGE_HOURS",
                "hours, e.g. 24",
                24i64,
            )?),
            daily_cap: env.parsed("FACEOFF_ARENA_DAILY_CAP", "votes per day, e.g. 30", 30i64)?,
            min_votes: env.parsed("FACEOFF_ARENA_MIN_VOTES", "votes, e.g. 30", 30u64)?,
            recompute_every: time::Duration::seconds(env.parsed(
                "FACEOFF_ARENA_RECOMPUTE_SECS",
                "seconds, e.g. 600",
                600i64,
            )?),
            ..ArenaSettings::default()
        };
        let smtp_url = match env.non_empty("FACEOFF_SMTP_URL") {
            Some(raw) => match Url::parse(&raw) {
                Ok(url) if matches!(url.scheme(), "smtp" | "smtps") && url.host().is_some() => Some(Secret::new(raw)),
                _ => {
                    return Err(ConfigError {
                        name: "FACEOFF_SMTP_URL",
                        value: "(hidden)".into(),
                        expected: "an smtp:// or smtps:// URL such as smtps://user:password@mail.example.com:465",
                    });
                }
            },
            None => None,
        };
        let mail_from = match env.non_empty("FACEOFF_MAIL_FROM") {
            Some(raw) => {
                if raw.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(ConfigError {
                        name: "FACEOFF_MAIL_FROM",
                        value: raw,
                        expected: "an address such as Faceoff <noreply@example.com>",
                    });
                }
                raw
            }
            None => {
                let from = format!("Faceoff <noreply@{}>", public_url.host_str().unwrap_or("localhost"));
                if from.parse::<lettre::message::Mailbox>().is_ok() {
                    from
                } else {
                    "Faceoff <noreply@localhost>".into()
                }
            }
        };
        let mail = MailSettings {
            smtp_url,
            from: mail_from,
            poll: Duration::from_secs(5),
            first_retry: Duration::from_secs(30),
        };
        Ok(Config {
            arena,
            database_url: env.non_empty("DATABASE_URL").map(Secret::new),
            database_read_url,
            redis_url,
            addr,
            public_url,
            data_dir,
            storage_url,
            secure_cookies: env.bool("FACEOFF_SECURE_COOKIES", false)?,
            signup_credits,
            workers,
            sandbox_latency: Duration::from_millis(latency_ms),
            sandbox_fail,
            sandbox_image: env.non_empty("FACEOFF_SANDBOX_IMAGE").map(PathBuf::from),
            bfl_api_key: env.non_empty("BFL_API_KEY").map(Secret::new),
            bfl_api_url,
            openai_api_key: env.non_empty("OPENAI_API_KEY").map(Secret::new),
            openai_api_url,
            gemini_api_key: env.non_empty("GEMINI_API_KEY").map(Secret::new),
            gemini_api_url,
            fal_key: env.non_empty("FAL_KEY").map(Secret::new),
            fal_queue_url,
            fal_api_url,
            replicate_api_token: env.non_empty("REPLICATE_API_TOKEN").map(Secret::new),
            replicate_api_url,
            stripe_secret_key: env.non_empty("STRIPE_SECRET_KEY").map(Secret::new),
            stripe_webhook_secret: env.non_empty("STRIPE_WEBHOOK_SECRET").map(Secret::new),
            stripe_api_url,
            log_format,
            db_wait: Duration::from_secs(db_wait_secs),
            catalog_file: env.non_empty("FACEOFF_CATALOG_FILE").map(PathBuf::from),
            client_ip_header,
            live_refresh: Duration::from_secs(10),
            metrics_addr,
            throttle: Default::default(),
            api_rate_limit,
            webhooks,
            queue,
            mail,
        })
    }

    /// The name of every environment variable the process reads itself: each one
    /// [`Config::from_lookup`] asks for, and `RUST_LOG` (read by `telemetry::init`). Libraries
    /// read more: the object store the `AWS_*` variables, and without `DATABASE_URL` the
    /// PostgreSQL client the `PG*` ones. Deployment files are checked against this list
    /// (`tests/api/deploy.rs`), so they cannot set a variable nothing reads.
    pub fn variables() -> std::collections::BTreeSet<String> {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let _ = Self::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_string());
            None
        });
        let mut names = asked.into_inner();
        names.insert("RUST_LOG".to_string());
        names
    }

    /// A configuration for tests: everything default, no providers, instant sandbox.
    pub fn for_tests() -> Self {
        let mut config = Self::from_lookup(|_| None).expect("defaults are valid");
        config.sandbox_latency = Duration::ZERO;
        config
    }

    /// An absolute URL on this site for `path` (which starts with `/`).
    pub fn absolute_url(&self, path: &str) -> String {
        let base = self.public_url.as_str().trim_end_matches('/');
        format!("{base}{path}")
    }
}

struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn non_empty(&self, name: &str) -> Option<String> {
        (self.get)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        expected: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.non_empty(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|_| ConfigError { name, value: raw, expected }),
        }
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.non_empty(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError { name, value: other.into(), expected: "true or false" }),
        }
    }
}

fn parse_http_url(name: &'static str, raw: &str) -> Result<Url, ConfigError> {
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err(ConfigError { name, value: raw.into(), expected: "an http:// or https:// URL" }),
    }
}

/// `name` relative to the working directory if it exists there, else next to `Cargo.toml`
/// (so `cargo run` and tests work from any directory).
pub fn locate_dir(name: &str) -> PathBuf {
    let local = PathBuf::from(name);
    if local.is_dir() { local } else { std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name) }
}

/// `path` made absolute against the current directory (without touching the file system).
pub fn absolute(path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn the_scale_out_settings_are_checked() {
        let c = config(&[]).expect("defaults");
        assert!(c.redis_url.is_none() && c.database_read_url.is_none(), "PostgreSQL and the primary by default");
        let c = config(&[
            ("FACEOFF_REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("DATABASE_READ_URL", "postgres://reader@replica:5432/faceoff"),
        ])
        .expect("valid");
        assert_eq!(c.redis_url.as_ref().map(Secret::expose), Some("redis://127.0.0.1:6379/0"));
        assert!(c.database_read_url.is_some());
        for (name, value) in [
            ("FACEOFF_REDIS_URL", "http://127.0.0.1:6379"),
            ("FACEOFF_REDIS_URL", "rediss://cache:6380"),
            ("DATABASE_READ_URL", "mysql://x"),
        ] {
            let err = config(&[(name, value)]).expect_err(value);
            assert_eq!(err.name, name);
            assert_eq!(err.value, "(hidden)", "the URL may hold a password");
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.public_url.as_str(), "http://127.0.0.1:3000/");
        assert_eq!(c.data_dir, PathBuf::from(".faceoff"));
        assert!(c.storage_url.starts_with("file://") && c.storage_url.ends_with(".faceoff/media"));
        assert!(!c.secure_cookies);
        assert_eq!(c.signup_credits, 100);
        assert_eq!(c.workers, 4);
        assert_eq!(c.sandbox_latency, Duration::from_millis(1500));
        assert!(c.sandbox_fail.is_empty());
        assert_eq!(c.bfl_api_url.as_str(), "https://api.bfl.ai/");
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert!(c.database_url.is_none() && c.bfl_api_key.is_none() && c.stripe_secret_key.is_none());
        assert!(c.catalog_file.is_none() && c.client_ip_header.is_none());
        assert_eq!(c.metrics_addr.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(config(&[("FACEOFF_METRICS_ADDR", "off")]).expect("off").metrics_addr, None);
        assert_eq!(config(&[("FACEOFF_METRICS_ADDR", "nope")]).expect_err("bad").name, "FACEOFF_METRICS_ADDR");
        assert_eq!(c.api_rate_limit.map(|n| n.get()), Some(600));
        assert_eq!(config(&[("FACEOFF_API_RATE_LIMIT", "off")]).expect("off").api_rate_limit, None);
        assert_eq!(config(&[("FACEOFF_API_RATE_LIMIT", "0")]).expect_err("zero").name, "FACEOFF_API_RATE_LIMIT");
        assert!(!c.webhooks.allow_private);
        assert!(config(&[("FACEOFF_WEBHOOK_ALLOW_PRIVATE", "true")]).expect("dev").webhooks.allow_private);
        assert_eq!(c.queue, QueueSettings::default());
        assert_eq!(c.queue.max_age, Some(Duration::from_secs(600)));
        let q = config(&[
            ("FACEOFF_API_MAX_QUEUED_JOBS", "50"),
            ("FACEOFF_STUDIO_MAX_RUNNING_JOBS", "2"),
            ("FACEOFF_QUEUE_MAX_AGE_SECS", "off"),
        ])
        .expect("queue")
        .queue;
        assert_eq!((q.api.max_queued, q.studio.max_running, q.max_age), (50, 2, None));
        assert_eq!(
            config(&[("FACEOFF_API_MAX_RUNNING_JOBS", "0")]).expect_err("zero").name,
            "FACEOFF_API_MAX_RUNNING_JOBS"
        );
        assert_eq!(
            config(&[("FACEOFF_QUEUE_MAX_AGE_SECS", "soon")]).expect_err("bad").name,
            "FACEOFF_QUEUE_MAX_AGE_SECS"
        );
    }

    #[test]
    fn invalid_values_name_the_variable_and_the_expectation() {
        let err = config(&[("FACEOFF_ADDR", "nope")]).expect_err("bad addr");
        assert_eq!(err.name, "FACEOFF_ADDR");
        assert!(err.to_string().contains("socket address"), "{err}");
        let err = config(&[("FACEOFF_SECURE_COOKIES", "maybe")]).expect_err("bad bool");
        assert_eq!(err.name, "FACEOFF_SECURE_COOKIES");
        let err = config(&[("FACEOFF_LOG_FORMAT", "xml")]).expect_err("bad format");
        assert!(err.to_string().contains("pretty or json"));
        let err = config(&[("FACEOFF_PUBLIC_URL", "ftp://x")]).expect_err("bad url");
        assert_eq!(err.name, "FACEOFF_PUBLIC_URL");
        let err = config(&[("FACEOFF_SIGNUP_CREDITS", "-5")]).expect_err("negative");
        assert_eq!(err.name, "FACEOFF_SIGNUP_CREDITS");
        let err = config(&[("FACEOFF_STORAGE_URL", "gopher://x")]).expect_err("bad store");
        assert_eq!(err.name, "FACEOFF_STORAGE_URL");
        let err = config(&[("FACEOFF_CLIENT_IP_HEADER", "X Forwarded")]).expect_err("bad header");
        assert_eq!(err.name, "FACEOFF_CLIENT_IP_HEADER");
    }

    #[test]
    fn variables_are_the_names_the_configuration_asks_for() {
        let names = Config::variables();
        for name in ["DATABASE_URL", "FACEOFF_ADDR", "FACEOFF_METRICS_ADDR", "FACEOFF_SECURE_COOKIES", "RUST_LOG"] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        assert!(names.contains("FACEOFF_SMTP_URL") && names.contains("FACEOFF_MAIL_FROM"));
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')));
    }

    #[test]
    fn lists_and_secrets() {
        let c = config(&[("FACEOFF_SANDBOX_FAIL", " flux-2 , ,flux-ultra-1-1"), ("BFL_API_KEY", "bfl_secret")])
            .expect("ok");
        assert_eq!(c.sandbox_fail, vec!["flux-2", "flux-ultra-1-1"]);
        assert!(!format!("{c:?}").contains("bfl_secret"));
        let c = config(&[("FACEOFF_CATALOG_FILE", " /etc/faceoff/catalog.toml ")]).expect("ok");
        assert_eq!(c.catalog_file, Some(PathBuf::from("/etc/faceoff/catalog.toml")));
        let c = config(&[("FACEOFF_CLIENT_IP_HEADER", "X-Forwarded-For")]).expect("ok");
        assert_eq!(c.client_ip_header.as_ref().map(|h| h.as_str()), Some("x-forwarded-for"));
        let c = config(&[("FACEOFF_ADDR", "0.0.0.0:8080")]).expect("ok");
        assert_eq!(c.public_url.as_str(), "http://localhost:8080/");
    }
}
