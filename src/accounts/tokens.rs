//! One-time tokens of the mail-link flows (verify an address, reset a password, confirm a new
//! address): 32 random bytes, URL-safe base64 in the link; only their SHA-256 is stored, with
//! the purpose, the address they confirm and an expiry. A token is redeemed at most once, by a
//! single conditional `UPDATE`. SQL on `account_token`.

use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use time::Duration;
use uuid::Uuid;

/// What a token is for (the `purpose` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    ChangeEmail,
}

impl Purpose {
    /// How long a link works.
    pub fn lifetime(self) -> Duration {
        match self {
            Purpose::VerifyEmail => Duration::hours(48),
            Purpose::ResetPassword => Duration::hours(1),
            Purpose::ChangeEmail => Duration::hours(24),
        }
    }

    /// How long the link works, in words for the mail.
    pub fn lifetime_words(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "48 hours",
            Purpose::ResetPassword => "one hour",
            Purpose::ChangeEmail => "24 hours",
        }
    }
}

/// Tokens of one purpose a user may be sent per [`WINDOW`] (rate limit on mail per account).
pub const PER_WINDOW: i64 = 3;
pub const WINDOW: Duration = Duration::minutes(15);

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `token` has the shape of one of ours (checked before any database work).
pub fn looks_like_token(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Issues a token for `user_id` confirming `email`; returns the token (never stored).
pub async fn issue(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    purpose: Purpose,
    email: &str,
) -> Result<String, sqlx::Error> {
    let random: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
    sqlx::query(
        "INSERT INTO account_token (token_hash, user_id, purpose, email, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(hash(&token))
    .bind(user_id)
    .bind(purpose)
    .bind(email)
    .bind(purpose.lifetime().as_seconds_f64())
    .execute(db)
    .await?;
    Ok(token)
}

/// How many tokens of `purpose` were issued to `user_id` in the last [`WINDOW`].
pub async fn recent(db: impl PgExecutor<'_>, user_id: Uuid, purpose: Purpose) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM account_token
         WHERE user_id = $1 AND purpose = $2 AND created_at > now() - make_interval(secs => $3)",
    )
    .bind(user_id)
    .bind(purpose)
    .bind(WINDOW.as_seconds_f64())
    .fetch_one(db)
    .await
}

/// A token that works: whose it is and the address it confirms.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Valid {
    pub user_id: Uuid,
    pub email: String,
}

/// Why a link does not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Never issued (or mistyped, or for another purpose).
    Unknown,
    Expired,
    Used,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::Unknown => "This link is not valid. Check that you opened the whole link from the message.",
            Refused::Expired => "This link has expired. Ask for a new one below.",
            Refused::Used => "This link was already used. Each link works only once.",
        }
    }
}

async fn classify(db: impl PgExecutor<'_>, token: &str, purpose: Purpose) -> Result<Refused, sqlx::Error> {
    let found: Option<(bool, bool)> = sqlx::query_as(
        "SELECT used_at IS NOT NULL, expires_at <= now() FROM account_token WHERE token_hash = $1 AND purpose = $2",
    )
    .bind(hash(token))
    .bind(purpose)
    .fetch_optional(db)
    .await?;
    Ok(match found {
        None => Refused::Unknown,
        Some((true, _)) => Refused::Used,
        Some((false, _)) => Refused::Expired,
    })
}

/// Whether `token` would work now, without using it (the reset form is shown only for a
/// working link).
pub async fn check(
    db: &mut sqlx::PgConnection,
    token: &str,
    purpose: Purpose,
) -> Result<Result<Valid, Refused>, sqlx::Error> {
    if !looks_like_token(token) {
        return Ok(Err(Refused::Unknown));
    }
    let valid: Option<Valid> = sqlx::query_as(
        "SELECT user_id, email FROM account_token
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()",
    )
    .bind(hash(token))
    .bind(purpose)
    .fetch_optional(&mut *db)
    .await?;
    match valid {
        Some(valid) => Ok(Ok(valid)),
        None => Ok(Err(classify(&mut *db, token, purpose).await?)),
    }
}

/// Uses `token` (in the caller's transaction): at most once, before it expires.
pub async fn redeem(
    db: &mut sqlx::PgConnection,
    token: &str,
    purpose: Purpose,
) -> Result<Result<Valid, Refused>, sqlx::Error> {
    if !looks_like_token(token) {
        return Ok(Err(Refused::Unknown));
    }
    let valid: Option<Valid> = sqlx::query_as(
        "UPDATE account_token SET used_at = now()
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
         RETURNING user_id, email",
    )
    .bind(hash(token))
    .bind(purpose)
    .fetch_optional(&mut *db)
    .await?;
    match valid {
        Some(valid) => Ok(Ok(valid)),
        None => Ok(Err(classify(&mut *db, token, purpose).await?)),
    }
}

/// Ends every unused token of `purpose` of a user (a new password makes older reset links
/// useless; a confirmed address, older verification links).
pub async fn retire(db: impl PgExecutor<'_>, user_id: Uuid, purpose: Purpose) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("UPDATE account_token SET used_at = now() WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL")
        .bind(user_id)
        .bind(purpose)
        .execute(db)
        .await?
        .rows_affected())
}

/// Deletes tokens that expired more than a week ago (used or not); returns how many.
pub async fn purge_old(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM account_token WHERE expires_at < now() - interval '7 days'")
        .execute(db)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shapes() {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert!(looks_like_token(&token));
        assert!(!looks_like_token("short"));
        assert!(!looks_like_token(&format!("{}=", &token[..42])));
    }
}
