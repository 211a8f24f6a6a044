//! The shared store behind the global rate limits: every instance counts into it, so N
//! instances allow what one does. PostgreSQL by default (tables `rate_limit_bucket` and
//! `rate_limit_failure`, one statement or database function per operation), Redis when
//! `FACEOFF_REDIS_URL` is set (one Lua script per operation). Both use the store's own clock,
//! so the instances' clocks do not matter.
//!
//! Two kinds of counters:
//! - **buckets** (request and attempt limits): GCRA, the algorithm of the per-process `governor`
//!   limiter in front of it, so both agree: `burst` requests at once, then one per `interval`.
//!   A refused request is not counted.
//! - **failures** (log-in backoff): a count and the time of the latest failure per key; a key
//!   forgets after [`FORGET_AFTER`](super::FORGET_AFTER) without a failure.
//!
//! Keys are hashed (SHA-256) before they are stored: the store holds no email or address in
//! clear. Rows and Redis keys expire on their own (Redis: `PEXPIRE`; PostgreSQL: `purge_expired`
//! in the housekeeping loop). These counters are not user data: account deletion and export
//! leave them alone, and they are forgotten within the hour anyway.

use std::{sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// How long one store operation may take before the limit falls back to the per-process one.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the counters live.
#[derive(Clone)]
pub struct LimitStore(Arc<Backend>);

enum Backend {
    /// No shared store: only the per-process limiters count (unit tests, tools).
    Local,
    Postgres(PgPool),
    Redis {
        connection: redis::aio::ConnectionManager,
        prefix: String,
    },
}

impl std::fmt::Debug for LimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// What a bucket said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketHit {
    pub allowed: bool,
    /// When refused: how long until the next request is allowed.
    pub wait: Duration,
    /// How long until the bucket is full again (the whole burst available).
    pub until_full: Duration,
}

/// The failures recorded under one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRecord {
    pub count: u32,
    /// Time since the latest failure.
    pub since_last: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rate-limit store (PostgreSQL): {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("rate-limit store (Redis): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("rate-limit store: no answer within {STORE_TIMEOUT:?}")]
    Timeout,
}

/// A stored key: the kind in clear (for operators), the identifying parts hashed.
pub fn key(kind: &str, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    format!("{kind}:{}", hex::encode(&hash.finalize()[..16]))
}

const REDIS_BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local base = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
if base + interval - now > interval * burst then
  return {0, base + interval - now - interval * burst, base - now}
end
local tat = base + interval
redis.call('SET', KEYS[1], tat, 'PX', tat - now)
return {1, 0, tat - now}
";

const REDIS_FAIL: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local forget = tonumber(ARGV[1])
for _, k in ipairs(KEYS) do
  local last = tonumber(redis.call('HGET', k, 'last') or 0)
  local n = tonumber(redis.call('HGET', k, 'n') or 0)
  if now - last >= forget then n = 0 end
  redis.call('HSET', k, 'n', math.min(n + 1, 1000000), 'last', now)
  redis.call('PEXPIRE', k, forget)
end
return 1
";

const REDIS_FAILURES: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, k in ipairs(KEYS) do
  local n = tonumber(redis.call('HGET', k, 'n') or 0)
  local last = tonumber(redis.call('HGET', k, 'last') or now)
  table.insert(out, n)
  table.insert(out, math.max(now - last, 0))
end
return out
";

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::ZERO)
}

impl LimitStore {
    /// Only the per-process limiters (no shared counting).
    pub fn local() -> Self {
        LimitStore(Arc::new(Backend::Local))
    }

    pub fn postgres(pool: PgPool) -> Self {
        LimitStore(Arc::new(Backend::Postgres(pool)))
    }

    /// Connects to Redis at `url` (`redis://host:port/db`, `rediss://` for TLS is not built
    /// in). Keys are stored under `{prefix}rl:`. Fails when Redis does not answer: a configured
    /// store that is down at start-up is an error, not a silent fallback.
    pub async fn redis(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("FACEOFF_REDIS_URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(STORE_TIMEOUT))
            .set_response_timeout(Some(STORE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = tokio::time::timeout(STORE_TIMEOUT * 3, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| anyhow::anyhow!("FACEOFF_REDIS_URL: Redis did not answer"))?
            .map_err(|e| anyhow::anyhow!("FACEOFF_REDIS_URL: connecting to Redis: {e}"))?;
        Ok(LimitStore(Arc::new(Backend::Redis { connection, prefix: format!("{prefix}rl:") })))
    }

    /// `local`, `postgres` or `redis` (logs, metrics).
    pub fn kind(&self) -> &'static str {
        match &*self.0 {
            Backend::Local => "local",
            Backend::Postgres(_) => "postgres",
            Backend::Redis { .. } => "redis",
        }
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(STORE_TIMEOUT, work).await.map_err(|_| StoreError::Timeout)?
    }

    /// Counts one request against the bucket `key` (GCRA: `burst` at once, then one per
    /// `interval`). `None` without a shared store.
    pub async fn hit(&self, key: &str, interval: Duration, burst: u32) -> Result<Option<BucketHit>, StoreError> {
        let interval_ms = interval.as_millis().clamp(1, i64::MAX as u128) as i64;
        match &*self.0 {
            Backend::Local => Ok(None),
            Backend::Postgres(pool) => {
                self.bounded(async {
                    let (allowed, wait, full): (bool, f64, f64) =
                        sqlx::query_as("SELECT allowed, wait_secs, full_secs FROM rate_limit_hit($1, $2, $3)")
                            .bind(key)
                            .bind(interval_ms)
                            .bind(burst as i32)
                            .fetch_one(pool)
                            .await?;
                    Ok(Some(BucketHit { allowed, wait: secs(wait), until_full: secs(full) }))
                })
                .await
            }
            Backend::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                self.bounded(async move {
                    let (allowed, wait, full): (i64, i64, i64) = redis::Script::new(REDIS_BUCKET)
                        .key(format!("{prefix}{key}"))
                        .arg(interval_ms)
                        .arg(burst)
                        .invoke_async(&mut connection)
                        .await?;
                    Ok(Some(BucketHit { allowed: allowed == 1, wait: millis(wait), until_full: millis(full) }))
                })
                .await
            }
        }
    }

    /// Records one failure under each of `keys`; a key whose latest failure is older than
    /// `forget` starts again from one.
    pub async fn fail(&self, keys: &[String], forget: Duration) -> Result<(), StoreError> {
        match &*self.0 {
            Backend::Local => Ok(()),
            Backend::Postgres(pool) => {
                self.bounded(async {
                    sqlx::query(
                        "INSERT INTO rate_limit_failure (key, failures, last_failure_at, expires_at)
                         SELECT k, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $2)
                         FROM unnest($1::text[]) AS k
                         ON CONFLICT (key) DO UPDATE SET
                             failures = CASE
                                 WHEN rate_limit_failure.last_failure_at
                                      <= excluded.last_failure_at - make_interval(secs => $2) THEN 1
                                 ELSE least(rate_limit_failure.failures + 1, 1000000) END,
                             last_failure_at = excluded.last_failure_at,
                             expires_at = excluded.expires_at",
                    )
                    .bind(keys)
                    .bind(forget.as_secs_f64())
                    .execute(pool)
                    .await?;
                    Ok(())
                })
                .await
            }
            Backend::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                self.bounded(async move {
                    let script = redis::Script::new(REDIS_FAIL);
                    let mut invocation = script.prepare_invoke();
                    for key in keys {
                        invocation.key(format!("{prefix}{key}"));
                    }
                    invocation.arg(forget.as_millis() as u64);
                    let _: i64 = invocation.invoke_async(&mut connection).await?;
                    Ok(())
                })
                .await
            }
        }
    }

    /// The failures recorded under each of `keys` (in order; `None` where there are none).
    pub async fn failures(&self, keys: &[String]) -> Result<Vec<Option<FailureRecord>>, StoreError> {
        match &*self.0 {
            Backend::Local => Ok(vec![None; keys.len()]),
            Backend::Postgres(pool) => {
                self.bounded(async {
                    let rows: Vec<(String, i32, f64)> = sqlx::query_as(
                        "SELECT key, failures,
                                extract(epoch FROM clock_timestamp() - last_failure_at)::float8
                         FROM rate_limit_failure WHERE key = ANY($1)",
                    )
                    .bind(keys)
                    .fetch_all(pool)
                    .await?;
                    Ok(keys
                        .iter()
                        .map(|key| {
                            rows.iter().find(|(k, ..)| k == key).map(|(_, count, since)| FailureRecord {
                                count: (*count).max(0) as u32,
                                since_last: secs(*since),
                            })
                        })
                        .collect())
                })
                .await
            }
            Backend::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                self.bounded(async move {
                    let script = redis::Script::new(REDIS_FAILURES);
                    let mut invocation = script.prepare_invoke();
                    for key in keys {
                        invocation.key(format!("{prefix}{key}"));
                    }
                    let flat: Vec<i64> = invocation.invoke_async(&mut connection).await?;
                    Ok(flat
                        .chunks(2)
                        .map(|pair| match pair {
                            [count, since] if *count > 0 => Some(FailureRecord {
                                count: (*count).min(u32::MAX as i64) as u32,
                                since_last: millis(*since),
                            }),
                            _ => None,
                        })
                        .collect())
                })
                .await
            }
        }
    }

    /// Forgets the failures under `keys`.
    pub async fn clear(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        match &*self.0 {
            Backend::Local => Ok(()),
            Backend::Postgres(pool) => {
                self.bounded(async {
                    sqlx::query("DELETE FROM rate_limit_failure WHERE key = ANY($1)").bind(keys).execute(pool).await?;
                    Ok(())
                })
                .await
            }
            Backend::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                self.bounded(async move {
                    let full: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
                    let _: i64 = redis::cmd("DEL").arg(&full).query_async(&mut connection).await?;
                    Ok(())
                })
                .await
            }
        }
    }

    /// Deletes expired counters (PostgreSQL; Redis expires its keys itself). Returns how many.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        match &*self.0 {
            Backend::Postgres(pool) => {
                let buckets =
                    sqlx::query("DELETE FROM rate_limit_bucket WHERE expires_at < now()").execute(pool).await?;
                let failures =
                    sqlx::query("DELETE FROM rate_limit_failure WHERE expires_at < now()").execute(pool).await?;
                Ok(buckets.rows_affected() + failures.rows_affected())
            }
            Backend::Local | Backend::Redis { .. } => Ok(0),
        }
    }
}
