//! Personal API keys: a user creates keys for scripts (`fo_` + 32 random bytes, shown once), the
//! JSON API authenticates with them. Only the key's SHA-256 is stored, with a short prefix so
//! the owner can tell keys apart; a revoked key stops working at once. SQL on `api_key`.
//!
//! [`KeyCache`] keeps the keys this process found valid for up to [`CACHE_TTL`], so an API
//! request costs no lookup; a trigger announces every revocation and deletion on
//! [`REVOKED_CHANNEL`] (whichever path made it: the keys page, a password change or reset, an
//! account deletion, SQL by hand), and every instance's listener empties its cache on it.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Every key starts with this.
pub const KEY_PREFIX: &str = "fo_";
/// Active (not revoked) keys a user may have at once.
pub const MAX_ACTIVE_KEYS: i64 = 20;
/// The longest key name.
pub const MAX_NAME_CHARS: usize = 100;

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `secret` has the shape of one of our keys (checked before any database work).
pub fn looks_like_key(secret: &str) -> bool {
    secret.starts_with(KEY_PREFIX) && secret.len() <= 64 && secret.bytes().all(|b| b.is_ascii_graphic())
}

/// A valid key: its id (rate limits count per key) and its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyOwner {
    pub api_key_id: Uuid,
    pub user_id: Uuid,
}

/// The key and the user it belongs to, if it is valid and not revoked. Records the key's use at
/// most once a minute in the same statement: writing the key's row on every request made a
/// client's parallel requests queue on its row lock (and cost a WAL flush each).
pub async fn authenticate(db: impl PgExecutor<'_>, secret: &str) -> Result<Option<KeyOwner>, sqlx::Error> {
    authenticate_hash(db, &hash(secret)).await
}

async fn authenticate_hash(db: impl PgExecutor<'_>, hash: &[u8]) -> Result<Option<KeyOwner>, sqlx::Error> {
    sqlx::query_as(
        "WITH key AS (
             SELECT api_key_id, user_id, last_used_at FROM api_key WHERE secret_hash = $1 AND revoked_at IS NULL
         ), touched AS (
             UPDATE api_key SET last_used_at = now() FROM key
             WHERE api_key.api_key_id = key.api_key_id
               AND (key.last_used_at IS NULL OR key.last_used_at < now() - interval '1 minute')
         )
         SELECT api_key_id, user_id FROM key",
    )
    .bind(hash)
    .fetch_optional(db)
    .await
}

/// Where the `api_key` triggers announce a revoked or deleted key (the payload is its id).
pub const REVOKED_CHANNEL: &str = "faceoff_api_key_revoked";
/// The longest a key found valid is trusted without asking the database again: a bound on a
/// revocation missed while an instance's listener was reconnecting, and how often a key in
/// steady use is looked up (which also records its use, [`authenticate`]).
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// At most this many keys are kept (then new ones are looked up every time until some expire).
const CACHE_MAX: usize = 10_000;

/// Keys this process found valid recently, by the SHA-256 of the secret (never the secret).
/// Used only while its listener ([`KeyCache::spawn_listener`]) follows [`REVOKED_CHANNEL`]: any
/// notification empties it (revocations are rare), and so does every (re)connection of the
/// listener, since notifications sent while it was disconnected are lost. A lookup that started
/// before a notification is not cached (the generation counter), so a key revoked during its
/// lookup is not kept. Without a running listener (tests, tools) every request asks the
/// database, as before.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<Vec<u8>, (KeyOwner, Instant)>>,
    generation: AtomicU64,
    live: AtomicBool,
}

impl KeyCache {
    /// The owner of `secret` if it is a valid key: from the cache, or from [`authenticate`]
    /// (then cached).
    pub async fn authenticate(&self, pool: &PgPool, secret: &str) -> Result<Option<KeyOwner>, sqlx::Error> {
        let hash = hash(secret);
        let live = self.live.load(Ordering::Acquire);
        if live && let Some(owner) = self.get(&hash) {
            return Ok(Some(owner));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let owner = authenticate_hash(pool, &hash).await?;
        if live && let Some(owner) = owner {
            self.put(hash, owner, generation);
        }
        Ok(owner)
    }

    fn get(&self, hash: &[u8]) -> Option<KeyOwner> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(hash).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(owner, _)| *owner)
    }

    fn put(&self, hash: Vec<u8>, owner: KeyOwner, generation: u64) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock `forget_all` takes: a notification since the lookup wins.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if keys.len() >= CACHE_MAX && !keys.contains_key(&hash) {
            keys.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if keys.len() >= CACHE_MAX {
                return;
            }
        }
        keys.insert(hash, (owner, Instant::now()));
    }

    /// Whether `secret` is cached now (for tests).
    pub fn holds(&self, secret: &str) -> bool {
        self.get(&hash(secret)).is_some()
    }

    /// Whether the listener follows revocations (the cache is in use).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Drops every cached key: on every notification, and at once after this process revoked
    /// keys itself (its own notification follows).
    pub fn forget_all(&self) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        keys.clear();
    }

    /// Follows [`REVOKED_CHANNEL`] until `shutdown`, emptying the cache on every notification
    /// and (re)connection; the cache is used from the first connection on.
    pub fn spawn_listener(self: &Arc<Self>, pool: PgPool, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            crate::db::listen(&pool, REVOKED_CHANNEL, "api key cache listener", &shutdown, |_| {
                cache.forget_all();
                cache.live.store(true, Ordering::Release);
                std::future::ready(())
            })
            .await;
            cache.live.store(false, Ordering::Release);
            cache.forget_all();
        })
    }
}

/// A key as its owner sees it in the list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    pub api_key_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A user's keys, newest first.
pub async fn list(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Vec<ApiKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT api_key_id, name, prefix, created_at, last_used_at, revoked_at FROM api_key
         WHERE user_id = $1 ORDER BY created_at DESC, api_key_id DESC",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}

pub async fn active_count(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM api_key WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .fetch_one(db)
        .await
}

/// Why a key name is not acceptable, in words for the form.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("give the key a name, e.g. the script that uses it".into())
    } else if name.chars().count() > MAX_NAME_CHARS {
        Err(format!("the name may be at most {MAX_NAME_CHARS} characters"))
    } else {
        Ok(())
    }
}

/// Creates a key named `name` (already validated) and returns its secret, which is never
/// stored and cannot be shown again.
pub async fn create(db: impl PgExecutor<'_>, user_id: Uuid, name: &str) -> Result<String, sqlx::Error> {
    let random: [u8; 32] = rand::random();
    let secret = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
    let prefix: String = secret.chars().take(10).collect();
    sqlx::query("INSERT INTO api_key (api_key_id, user_id, name, prefix, secret_hash) VALUES ($1, $2, $3, $4, $5)")
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(name)
        .bind(&prefix)
        .bind(hash(&secret))
        .execute(db)
        .await?;
    Ok(secret)
}

/// Revokes a key of `user_id`; `false` when the user has no such key (revoking a revoked key is
/// a no-op that answers `true`).
pub async fn revoke(db: impl PgExecutor<'_>, user_id: Uuid, api_key_id: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<bool> = sqlx::query_scalar(
        "WITH revoked AS (
             UPDATE api_key SET revoked_at = now()
             WHERE api_key_id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING api_key_id
         )
         SELECT true FROM api_key WHERE api_key_id = $1 AND user_id = $2",
    )
    .bind(api_key_id)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

/// Revokes every active key of a user; returns how many.
pub async fn revoke_all(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("UPDATE api_key SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .execute(db)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shapes() {
        assert!(looks_like_key("fo_abcDEF123-_"));
        assert!(!looks_like_key("sk_live_abc"));
        assert!(!looks_like_key(&format!("fo_{}", "a".repeat(100))));
        assert!(!looks_like_key("fo_a\u{0}b"));
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(101)).is_err());
        assert!(validate_name("deploy script").is_ok());
    }
}
