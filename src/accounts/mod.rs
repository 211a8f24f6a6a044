//! Accounts: users and their roles, passwords ([`password`]), sessions ([`session_store`]),
//! personal API keys ([`api_keys`]), sign-up/log-in rate limits ([`rate_limit`]), the
//! administrators' credit adjustments ([`admin`]), the one-time tokens of mail links
//! ([`tokens`]) and the flows that send them: verification, password reset, email change,
//! deletion and export ([`lifecycle`]). SQL on `app_user`, `session`, `api_key`,
//! `account_token` and `signup_grant_claim` lives here. The pages (sign-up, log-in, the account
//! page, API keys, admin, the mail-link flows) are in [`routes`].

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::ledger;

pub mod admin;
pub mod api_keys;
pub mod lifecycle;
pub mod password;
pub mod rate_limit;
pub mod routes;
pub mod session_store;
pub mod tokens;

/// Session key holding the signed-in user's id.
pub const SESSION_USER_KEY: &str = "user_id";

/// A user's `role` column (`app_user_role_check`). sqlx decodes the text directly; another value
/// is a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

/// The signed-in user as pages see them, with their balance for the header.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub available: i64,
    pub held: i64,
    /// Whether the address was confirmed through a mailed link (pages show a banner until it is).
    pub email_verified: bool,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A user as pages see them, with the balance as `ledger::balance` computes it (the wallet's
/// cached balance, and its pending holds), and `refreshed_day` when read through a session.
#[derive(sqlx::FromRow)]
struct CurrentUserRow {
    user_id: Uuid,
    email: String,
    role: Role,
    email_verified: bool,
    balance: Option<i64>,
    held: Option<i64>,
    refreshed_day: Option<i64>,
}

/// The columns and joins of [`CurrentUserRow`]; `$extra` joins (and the `refreshed_day` column)
/// come from the caller.
macro_rules! current_user_select {
    ($refreshed_day:literal, $from:literal) => {
        concat!(
            "SELECT u.user_id, u.email, u.role, u.email_verified_at IS NOT NULL AS email_verified, a.balance,
                    COALESCE((SELECT sum(h.amount) FROM ledger_hold h
                              WHERE h.account_id = a.account_id AND h.status = 'pending'), 0)::bigint AS held, ",
            $refreshed_day,
            " AS refreshed_day FROM ",
            $from,
            " LEFT JOIN ledger_account a ON a.user_id = u.user_id"
        )
    };
}

impl CurrentUserRow {
    fn into_user(self) -> Result<CurrentUser, ledger::LedgerError> {
        let (Some(available), Some(held)) = (self.balance, self.held) else {
            return Err(ledger::LedgerError::NoWallet(self.user_id));
        };
        Ok(CurrentUser {
            id: self.user_id,
            email: self.email,
            role: self.role,
            available,
            held,
            email_verified: self.email_verified,
        })
    }
}

/// The user with id `user_id` as pages see them (with their balance), or `None` when no such
/// user exists any more (a deleted user counts as signed out).
pub async fn current_user(pool: &PgPool, user_id: Uuid) -> Result<Option<CurrentUser>, ledger::LedgerError> {
    let row: Option<CurrentUserRow> = sqlx::query_as(concat!(
        current_user_select!("NULL::bigint", "app_user u"),
        " WHERE u.user_id = $1 AND u.deleted_at IS NULL"
    ))
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    row.map(CurrentUserRow::into_user).transpose()
}

/// The user signed in on the stored session `session_id` (not expired), with their balance and
/// the day the session last moved its expiry (`refreshed_day_key` in its data): one round trip
/// for what a signed-in page needs, instead of loading the session and then the user. `None`
/// when the session is unknown, expired, signed out, or its user deleted.
pub async fn session_user(
    pool: &PgPool,
    session_id: &str,
    refreshed_day_key: &str,
) -> Result<Option<(CurrentUser, Option<i64>)>, ledger::LedgerError> {
    // The session's data is what tower-sessions stored (`session_store`): a JSON object whose
    // user id is a UUID string; anything else signs nobody in (and casts nothing).
    let row: Option<CurrentUserRow> = sqlx::query_as(concat!(
        current_user_select!(
            "CASE WHEN jsonb_typeof(s.data -> $2) = 'number' THEN (s.data ->> $2)::numeric::bigint END",
            "session s JOIN app_user u ON u.user_id = CASE
                 WHEN s.data ->> $3 ~ '^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$'
                 THEN (s.data ->> $3)::uuid END"
        ),
        " WHERE s.id = $1 AND s.expiry_date > now() AND u.deleted_at IS NULL"
    ))
    .bind(session_id)
    .bind(refreshed_day_key)
    .bind(SESSION_USER_KEY)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let refreshed_day = row.refreshed_day;
    Ok(Some((row.into_user()?, refreshed_day)))
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// A user row as the log-in and admin code need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    #[sqlx(rename = "user_id")]
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub password_hash: String,
    pub email_verified: bool,
}

const USER_COLUMNS: &str = "user_id, email, role, password_hash, email_verified_at IS NOT NULL AS email_verified";

/// The user with this email (trimmed, compared case-insensitively), if any (deleted accounts
/// are nobody's).
pub async fn find_by_email(db: impl PgExecutor<'_>, email: &str) -> Result<Option<User>, sqlx::Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM app_user WHERE lower(email) = lower($1) AND deleted_at IS NULL");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(email.trim()).fetch_optional(db).await
}

pub async fn find_by_id(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Option<User>, sqlx::Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM app_user WHERE user_id = $1 AND deleted_at IS NULL");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_optional(db).await
}

/// The address as the sign-up grant counts it, so that one mailbox gets the free credits once:
/// lower case; a `+tag` dropped from the local part (every major provider delivers
/// `ann+x@` to `ann@`); and for Gmail (`gmail.com`, `googlemail.com`), which ignores dots in
/// the local part, the dots dropped too. Other providers' dots are kept: for most of them
/// `a.nn@` and `ann@` are different people.
pub fn grant_address(email: &str) -> String {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.rsplit_once('@') else { return email };
    let local = local.split('+').next().unwrap_or(local);
    let domain = if domain == "googlemail.com" { "gmail.com" } else { domain };
    let local = if domain == "gmail.com" { local.replace('.', "") } else { local.to_string() };
    format!("{local}@{domain}")
}

/// Grants the free sign-up credits to `user_id` for the address `email`, once per
/// [`grant_address`] ever (in the caller's transaction); `false` when that address already had
/// them. `verified` says in the ledger line's memo whether they came with a verified address.
pub async fn grant_signup_credits(
    tx: &mut sqlx::PgConnection,
    user_id: Uuid,
    email: &str,
    credits: i64,
    verified: bool,
) -> Result<bool, CreateUserError> {
    use sha2::Digest;
    let address_hash = sha2::Sha256::digest(grant_address(email).as_bytes()).to_vec();
    let claimed = sqlx::query("INSERT INTO signup_grant_claim (address_hash) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(address_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if claimed == 0 || credits <= 0 {
        return Ok(claimed == 1);
    }
    let wallet = ledger::wallet(&mut *tx, user_id).await?;
    let grants = ledger::system_account(&mut *tx, ledger::System::SignupGrants).await?;
    let key = format!("signup:{user_id}");
    ledger::transfer(
        tx,
        ledger::NewTransfer {
            key: &key,
            debit: grants,
            credit: wallet,
            amount: credits,
            kind: ledger::Kind::SignupBonus,
            memo: if verified { SIGNUP_MEMO_VERIFIED } else { SIGNUP_MEMO },
            refs: ledger::Refs::default(),
        },
    )
    .await?;
    Ok(true)
}

/// The sign-up grant's memo when it was given at sign-up (no mail configured).
pub const SIGNUP_MEMO: &str = "Sign-up bonus";
/// The sign-up grant's memo when it was given for verifying the address.
pub const SIGNUP_MEMO_VERIFIED: &str = "Sign-up bonus, for verifying your email address";

pub async fn set_password_hash(db: impl PgExecutor<'_>, user_id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE app_user SET password_hash = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(hash)
        .execute(db)
        .await?;
    Ok(())
}

/// Sets the role of the user with this email; `None` when there is no such user.
pub async fn set_role(db: impl PgExecutor<'_>, email: &str, role: Role) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("UPDATE app_user SET role = $2 WHERE lower(email) = lower($1) RETURNING user_id")
        .bind(email.trim())
        .bind(role)
        .fetch_optional(db)
        .await
}

/// Deletes every server-side session of a user except `keep` (the current one, when given):
/// those browsers are signed out at their next request. Returns how many were deleted.
pub async fn delete_sessions(db: impl PgExecutor<'_>, user_id: Uuid, keep: Option<&str>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM session WHERE data ->> 'user_id' = $1 AND id IS DISTINCT FROM $2")
        .bind(user_id.to_string())
        .bind(keep)
        .execute(db)
        .await?
        .rows_affected())
}

/// Whether the session `id` still exists and has not expired (it ends at log-out, "sign out
/// everywhere" and a password change elsewhere).
pub async fn session_is_live(db: impl PgExecutor<'_>, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM session WHERE id = $1 AND expiry_date > now())")
        .bind(id)
        .fetch_one(db)
        .await
}

/// Trims an email address as typed; the stored address keeps its case.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_string()
}

/// The longest email address accepted (RFC 5321's limit on a path).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Why an (already trimmed) email address is not acceptable, in words for the form.
pub fn validate_email(email: &str) -> Result<(), &'static str> {
    if email.is_empty() {
        return Err("enter your email address");
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err("that email address is too long");
    }
    let valid = match email.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        }
        None => false,
    };
    if valid { Ok(()) } else { Err("enter an email address like name@example.com") }
}

/// Characters that show nothing or reorder text (zero-width spaces and joiners, bidi controls,
/// the soft hyphen, variation selectors, tags…): an address with them looks like another one.
fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
            | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF
            | 0xFFA0 | 0xFFF9..=0xFFFB | 0x1BCA0..=0x1BCA3 | 0xE0000..=0xE007F | 0xE0100..=0xE01EF
    )
}

/// Creates a user, their wallet and their sign-up grant in one transaction (the caller's).
/// The email must already be normalised (trimmed); uniqueness is case-insensitive
/// (`app_user_email_key`), reported as [`CreateUserError::EmailTaken`].
pub async fn create_user(
    tx: &mut sqlx::PgConnection,
    email: &str,
    password_hash: &str,
    role: Role,
    signup_credits: i64,
) -> Result<Uuid, CreateUserError> {
    let user_id = Uuid::now_v7();
    let inserted = sqlx::query("INSERT INTO app_user (user_id, email, password_hash, role) VALUES ($1, $2, $3, $4)")
        .bind(user_id)
        .bind(email)
        .bind(password_hash)
        .bind(role)
        .execute(&mut *tx)
        .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("app_user_email_key") => {
            return Err(CreateUserError::EmailTaken);
        }
        Err(err) => return Err(CreateUserError::Db(err)),
    }
    let wallet = ledger::open_wallet(tx, user_id).await?;
    if signup_credits > 0 {
        let grants = ledger::system_account(&mut *tx, ledger::System::SignupGrants).await?;
        let key = format!("signup:{user_id}");
        ledger::transfer(
            tx,
            ledger::NewTransfer {
                key: &key,
                debit: grants,
                credit: wallet,
                amount: signup_credits,
                kind: ledger::Kind::SignupBonus,
                memo: "Sign-up bonus",
                refs: ledger::Refs::default(),
            },
        )
        .await?;
    }
    Ok(user_id)
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_checked() {
        assert_eq!(normalize_email("  Ann@Example.com \n"), "Ann@Example.com");
        assert!(validate_email("ann@example.com").is_ok());
        assert!(validate_email("").is_err());
        assert!(validate_email("ann").is_err());
        assert!(validate_email("@example.com").is_err());
        assert!(validate_email("ann@").is_err());
        assert!(validate_email("a nn@example.com").is_err());
        assert!(validate_email(&format!("{}@example.com", "a".repeat(250))).is_err());
        for lookalike in
            ["ann\u{200B}@example.com", "ann@exa\u{202E}mple.com", "\u{FEFF}ann@example.com", "an\u{00AD}n@example.com"]
        {
            assert!(validate_email(lookalike).is_err(), "{lookalike:?}");
        }
        assert!(validate_email("zoë@exämple.com").is_ok(), "letters from other scripts are fine");
    }

    #[test]
    fn grant_addresses_fold_case_tags_and_gmail_dots() {
        assert_eq!(grant_address(" Ann+promo@Example.com"), "ann@example.com");
        assert_eq!(grant_address("a.nn@example.com"), "a.nn@example.com");
        assert_eq!(grant_address("A.n.n+x@googlemail.com"), "ann@gmail.com");
        assert_eq!(grant_address("ann@gmail.com"), grant_address("a.NN+y@gmail.com"));
    }
}
