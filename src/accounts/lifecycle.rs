//! The flows that keep an account usable over time, each in one transaction that also queues
//! its mail (`mail::enqueue`): sign-up with a verification link, verification (and the free
//! credits, where mail is configured), the password reset, the email change, deletion and the
//! data export. The pages that drive them are in `routes::lifecycle`.

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    CreateUserError, Role,
    tokens::{self, Purpose, Refused},
};
use crate::{
    config::Config,
    ledger,
    mail::{self, Mail, MailError},
    storage::Store,
};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<CreateUserError> for LifecycleError {
    fn from(err: CreateUserError) -> Self {
        match err {
            CreateUserError::Ledger(err) => LifecycleError::Ledger(err),
            CreateUserError::Db(err) => LifecycleError::Db(err),
            // Callers handle a taken address before this conversion.
            CreateUserError::EmailTaken => LifecycleError::Db(sqlx::Error::RowNotFound),
        }
    }
}

fn footer_unexpected() -> String {
    "If you did not ask for this, you can ignore this message: nothing changes without the link.".into()
}

async fn send_verification(
    db: &mut PgConnection,
    config: &Config,
    user_id: Uuid,
    email: &str,
) -> Result<(), LifecycleError> {
    let token = tokens::issue(&mut *db, user_id, Purpose::VerifyEmail, email).await?;
    let credits = config.signup_credits;
    let mut paragraphs = vec!["Welcome to Faceoff. Please confirm that this is your email address.".to_string()];
    if config.mail.configured() && credits > 0 {
        paragraphs.push(format!("Your {credits} free credits are added to your account when you confirm it."));
    }
    paragraphs.push(format!("The link works once, for {}.", Purpose::VerifyEmail.lifetime_words()));
    let mail = Mail {
        kind: "verify_email",
        to: email.to_string(),
        subject: "Confirm your email address for Faceoff".into(),
        paragraphs,
        action: Some(("Confirm my email address".into(), config.absolute_url(&format!("/verify-email/{token}")))),
        footer: "You get this because someone signed up to Faceoff with this address. If it was not you, ignore it."
            .into(),
    };
    mail::enqueue(db, Some(user_id), &mail).await?;
    Ok(())
}

/// What sign-up did; the page answers the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUp {
    Created(Uuid),
    /// The address has an account: its owner was told someone tried to sign up with it.
    Existing,
}

/// Signs `email` (valid, trimmed) up with the password `password_hash`: a new, unverified
/// account and a verification mail; or, when the address is taken, a mail to its owner. Where
/// no mail is configured the free credits are granted now, as before; otherwise at verification.
pub async fn sign_up(
    pool: &PgPool,
    config: &Config,
    email: &str,
    password_hash: &str,
) -> Result<SignUp, LifecycleError> {
    let mut tx = crate::db::begin(pool).await?;
    if let Some(existing) = super::find_by_email(&mut *tx, email).await? {
        notify_signup_attempt(&mut tx, config, existing.id, &existing.email).await?;
        tx.commit().await?;
        return Ok(SignUp::Existing);
    }
    let user_id = match super::create_user(&mut tx, email, password_hash, Role::User, 0).await {
        Ok(id) => id,
        Err(CreateUserError::EmailTaken) => return Ok(SignUp::Existing), // signed up meanwhile
        Err(err) => return Err(err.into()),
    };
    if !config.mail.configured() {
        super::grant_signup_credits(&mut tx, user_id, email, config.signup_credits, false).await?;
    }
    send_verification(&mut tx, config, user_id, email).await?;
    tx.commit().await?;
    Ok(SignUp::Created(user_id))
}

/// Tells the owner of `email` that someone tried to sign up with it (at most a few times per
/// quarter hour).
async fn notify_signup_attempt(
    db: &mut PgConnection,
    config: &Config,
    user_id: Uuid,
    email: &str,
) -> Result<(), LifecycleError> {
    let recent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mail_outbox WHERE user_id = $1 AND kind = 'signup_attempt'
         AND created_at > now() - make_interval(secs => $2)",
    )
    .bind(user_id)
    .bind(tokens::WINDOW.as_seconds_f64())
    .fetch_one(&mut *db)
    .await?;
    if recent >= tokens::PER_WINDOW {
        return Ok(());
    }
    let mail = Mail {
        kind: "signup_attempt",
        to: email.to_string(),
        subject: "Someone tried to sign up to Faceoff with your address".into(),
        paragraphs: vec![
            "Someone (maybe you) tried to create a Faceoff account with this email address. You already have one, so no new account was made.".into(),
            "If it was you: log in instead, or reset your password if you forgot it.".into(),
        ],
        action: Some(("Reset my password".into(), config.absolute_url("/forgot-password"))),
        footer: "If it was not you, nothing changed and you can ignore this message.".into(),
    };
    mail::enqueue(db, Some(user_id), &mail).await?;
    Ok(())
}

/// A confirmed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub user_id: Uuid,
    /// Credits granted now (0: none, e.g. the address had them before, or no mail configured).
    pub granted: i64,
}

/// Redeems a verification link: the address is confirmed and, where mail is configured, the
/// free credits are granted (once per normalized address, ever).
pub async fn verify_email(
    pool: &PgPool,
    config: &Config,
    token: &str,
) -> Result<Result<Verified, Refused>, LifecycleError> {
    let mut tx = crate::db::begin(pool).await?;
    let valid = match tokens::redeem(&mut tx, token, Purpose::VerifyEmail).await? {
        Ok(valid) => valid,
        Err(refused) => return Ok(Err(refused)),
    };
    // The address the link was sent to must still be the account's.
    let first: Option<bool> = sqlx::query_scalar(
        "UPDATE app_user SET email_verified_at = COALESCE(email_verified_at, now())
         WHERE user_id = $1 AND deleted_at IS NULL AND lower(email) = lower($2)
         RETURNING (SELECT email_verified_at IS NULL FROM app_user WHERE user_id = $1)",
    )
    .bind(valid.user_id)
    .bind(&valid.email)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(first) = first else { return Ok(Err(Refused::Unknown)) };
    let mut granted = 0;
    if first && config.mail.configured() {
        let given =
            super::grant_signup_credits(&mut tx, valid.user_id, &valid.email, config.signup_credits, true).await?;
        if given {
            granted = config.signup_credits;
        }
    }
    tokens::retire(&mut *tx, valid.user_id, Purpose::VerifyEmail).await?;
    tx.commit().await?;
    tracing::info!(user_id = %valid.user_id, granted, "email verified");
    Ok(Ok(Verified { user_id: valid.user_id, granted }))
}

/// The outcome of asking for a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Sent,
    AlreadyVerified,
    /// Too many links of this kind lately: try again in a quarter of an hour.
    TooMany,
}

/// Sends the signed-in user a new verification link.
pub async fn resend_verification(pool: &PgPool, config: &Config, user_id: Uuid) -> Result<Requested, LifecycleError> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(user) = super::find_by_id(&mut *tx, user_id).await? else { return Ok(Requested::AlreadyVerified) };
    if user.email_verified {
        return Ok(Requested::AlreadyVerified);
    }
    if tokens::recent(&mut *tx, user_id, Purpose::VerifyEmail).await? >= tokens::PER_WINDOW {
        return Ok(Requested::TooMany);
    }
    send_verification(&mut tx, config, user_id, &user.email).await?;
    tx.commit().await?;
    Ok(Requested::Sent)
}

/// "Forgot password": mails a reset link when `email` has an account (and it has not had too
/// many lately). The caller answers the same whatever happened.
pub async fn request_password_reset(pool: &PgPool, config: &Config, email: &str) -> Result<(), LifecycleError> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(user) = super::find_by_email(&mut *tx, email).await? else { return Ok(()) };
    if tokens::recent(&mut *tx, user.id, Purpose::ResetPassword).await? >= tokens::PER_WINDOW {
        tracing::info!(user_id = %user.id, "password reset not sent: too many lately");
        return Ok(());
    }
    let token = tokens::issue(&mut *tx, user.id, Purpose::ResetPassword, &user.email).await?;
    let mail = Mail {
        kind: "reset_password",
        to: user.email.clone(),
        subject: "Reset your Faceoff password".into(),
        paragraphs: vec![
            "Someone (we hope you) asked to reset the password of your Faceoff account.".into(),
            format!(
                "The link works once, for {}. Setting a new password signs you out everywhere.",
                Purpose::ResetPassword.lifetime_words()
            ),
        ],
        action: Some(("Choose a new password".into(), config.absolute_url(&format!("/reset-password/{token}")))),
        footer: footer_unexpected(),
    };
    mail::enqueue(&mut tx, Some(user.id), &mail).await?;
    tx.commit().await?;
    Ok(())
}

/// A finished reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    pub user_id: Uuid,
    pub sessions_ended: u64,
    pub keys_revoked: u64,
}

/// Sets a new password through a reset link: every session ends, and the API keys are revoked
/// when `revoke_keys`.
pub async fn reset_password(
    pool: &PgPool,
    token: &str,
    password_hash: &str,
    revoke_keys: bool,
) -> Result<Result<Reset, Refused>, LifecycleError> {
    let mut tx = crate::db::begin(pool).await?;
    let valid = match tokens::redeem(&mut tx, token, Purpose::ResetPassword).await? {
        Ok(valid) => valid,
        Err(refused) => return Ok(Err(refused)),
    };
    if super::find_by_id(&mut *tx, valid.user_id).await?.is_none() {
        return Ok(Err(Refused::Unknown));
    }
    super::set_password_hash(&mut *tx, valid.user_id, password_hash).await?;
    tokens::retire(&mut *tx, valid.user_id, Purpose::ResetPassword).await?;
    let sessions_ended = super::delete_sessions(&mut *tx, valid.user_id, None).await?;
    let keys_revoked = if revoke_keys { super::api_keys::revoke_all(&mut *tx, valid.user_id).await? } else { 0 };
    tx.commit().await?;
    tracing::info!(user_id = %valid.user_id, sessions_ended, keys_revoked, "password reset");
    Ok(Ok(Reset { user_id: valid.user_id, sessions_ended, keys_revoked }))
}

/// Asks to change the signed-in user's address to `new_email` (valid, trimmed; the caller
/// checked the password): a confirmation link goes to the new address. When the new address
/// belongs to another account nothing is sent, and the caller answers the same.
pub async fn request_email_change(
    pool: &PgPool,
    config: &Config,
    user_id: Uuid,
    new_email: &str,
) -> Result<Requested, LifecycleError> {
    let mut tx = crate::db::begin(pool).await?;
    if tokens::recent(&mut *tx, user_id, Purpose::ChangeEmail).await? >= tokens::PER_WINDOW {
        return Ok(Requested::TooMany);
    }
    if super::find_by_email(&mut *tx, new_email).await?.is_some() {
        return Ok(Requested::Sent);
    }
    let token = tokens::issue(&mut *tx, user_id, Purpose::ChangeEmail, new_email).await?;
    let mail = Mail {
        kind: "change_email",
        to: new_email.to_string(),
        subject: "Confirm your new email address for Faceoff".into(),
        paragraphs: vec![
            "You asked to use this address for your Faceoff account. Confirm it with the link below.".into(),
            format!("The link works once, for {}.", Purpose::ChangeEmail.lifetime_words()),
        ],
        action: Some(("Confirm my new address".into(), config.absolute_url(&format!("/verify-email/{token}")))),
        footer: footer_unexpected(),
    };
    mail::enqueue(&mut tx, Some(user_id), &mail).await?;
    tx.commit().await?;
    Ok(Requested::Sent)
}

/// A confirmed change of address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub user_id: Uuid,
    pub email: String,
}

/// Why an email change link did not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRefused {
    Link(Refused),
    /// Another account took the address since the link was sent.
    Taken,
}

/// Redeems an email-change link: the account's address becomes the new one (verified), and
/// the old address is told.
pub async fn confirm_email_change(
    pool: &PgPool,
    config: &Config,
    token: &str,
) -> Result<Result<Changed, ChangeRefused>, LifecycleError> {
    let mut tx = crate::db::begin(pool).await?;
    let valid = match tokens::redeem(&mut tx, token, Purpose::ChangeEmail).await? {
        Ok(valid) => valid,
        Err(refused) => return Ok(Err(ChangeRefused::Link(refused))),
    };
    let Some(user) = super::find_by_id(&mut *tx, valid.user_id).await? else {
        return Ok(Err(ChangeRefused::Link(Refused::Unknown)));
    };
    let updated = sqlx::query(
        "UPDATE app_user SET email = $2, email_verified_at = now() WHERE user_id = $1 AND deleted_at IS NULL",
    )
    .bind(user.id)
    .bind(&valid.email)
    .execute(&mut *tx)
    .await;
    match updated {
        Ok(_) => {}
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("app_user_email_key") => {
            return Ok(Err(ChangeRefused::Taken));
        }
        Err(err) => return Err(err.into()),
    }
    if !user.email_verified && config.mail.configured() {
        super::grant_signup_credits(&mut tx, user.id, &valid.email, config.signup_credits, true).await?;
    }
    tokens::retire(&mut *tx, user.id, Purpose::ChangeEmail).await?;
    tokens::retire(&mut *tx, user.id, Purpose::VerifyEmail).await?;
    tokens::retire(&mut *tx, user.id, Purpose::ResetPassword).await?;
    let notice = Mail {
        kind: "email_changed",
        to: user.email.clone(),
        subject: "Your Faceoff email address was changed".into(),
        paragraphs: vec![
            format!("The email address of your Faceoff account is now {}.", valid.email),
            "From now on you log in with the new address, and our messages go there.".into(),
        ],
        action: None,
        footer: "If you did not make this change, reply to this message at once: someone may have your password."
            .into(),
    };
    mail::enqueue(&mut tx, Some(user.id), &notice).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "email address changed");
    Ok(Ok(Changed { user_id: user.id, email: valid.email }))
}

/// What deleting the account will lose, stated before confirming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionSummary {
    pub available: i64,
    /// Of the available credits, how many (at most) were bought rather than given.
    pub unspent_purchased: i64,
    pub runs: i64,
    /// Generations still running: the account can be deleted once they settle.
    pub pending_jobs: i64,
}

pub async fn deletion_summary(pool: &PgPool, user_id: Uuid) -> Result<DeletionSummary, LifecycleError> {
    let balance = ledger::balance(pool, user_id).await?;
    let (purchased, runs, pending_jobs): (i64, i64, i64) = sqlx::query_as(
        "SELECT
             COALESCE((SELECT sum(credits) FROM payment WHERE user_id = $1 AND status = 'paid'), 0)::bigint,
             (SELECT count(*) FROM generation_run WHERE user_id = $1),
             (SELECT count(*) FROM generation_job j JOIN generation_run r USING (run_id)
              WHERE r.user_id = $1 AND j.status IN ('queued', 'running'))",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(DeletionSummary {
        available: balance.available,
        unspent_purchased: purchased.min(balance.available),
        runs,
        pending_jobs,
    })
}

/// Why the account could not be deleted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteRefused {
    /// Generations are still running (their holds settle first).
    Busy,
    Gone,
}

/// Deletes an account (the caller checked the password): its runs, prompts, images (rows and
/// stored objects), API keys, webhooks, tokens, mail and sessions go; the `app_user` row stays
/// with a scrubbed address and no password, as the pseudonymous owner of the ledger wallet and
/// the payments (both append-only: the books still balance). A goodbye mail goes to the old
/// address. Stored objects are deleted after the commit (the orphan sweep removes any left).
pub async fn delete_account(
    pool: &PgPool,
    store: &Store,
    user_id: Uuid,
) -> Result<Result<(), DeleteRefused>, LifecycleError> {
    let mut tx = crate::db::begin(pool).await?;
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM app_user WHERE user_id = $1 AND deleted_at IS NULL FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(email) = email else { return Ok(Err(DeleteRefused::Gone)) };
    let busy: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM generation_job j JOIN generation_run r USING (run_id)
                        WHERE r.user_id = $1 AND j.status IN ('queued', 'running'))",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    if busy {
        return Ok(Err(DeleteRefused::Busy));
    }
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM media_object WHERE owner_user_id = $1")
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
    // Publications and reports first (they reference the runs and the card objects).
    crate::sharing::delete_user_data(&mut tx, user_id).await?;
    for sql in [
        "DELETE FROM arena_vote WHERE run_id IN (SELECT run_id FROM generation_run WHERE user_id = $1)",
        "DELETE FROM generation_job WHERE run_id IN (SELECT run_id FROM generation_run WHERE user_id = $1)",
        "DELETE FROM generation_run WHERE user_id = $1",
        "DELETE FROM media_object WHERE owner_user_id = $1",
        "DELETE FROM api_key WHERE user_id = $1",
        "DELETE FROM webhook_event WHERE user_id = $1",
        "DELETE FROM webhook_endpoint WHERE user_id = $1",
        "DELETE FROM account_token WHERE user_id = $1",
        "DELETE FROM mail_outbox WHERE user_id = $1",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).execute(&mut *tx).await?;
    }
    super::delete_sessions(&mut *tx, user_id, None).await?;
    sqlx::query(
        "UPDATE app_user SET email = 'deleted-' || replace(user_id::text, '-', '') || '@deleted.invalid',
                password_hash = '!', role = 'user', email_verified_at = NULL, deleted_at = now()
         WHERE user_id = $1",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    let goodbye = Mail {
        kind: "account_deleted",
        to: email,
        subject: "Your Faceoff account was deleted".into(),
        paragraphs: vec![
            "Your Faceoff account was deleted, as you asked: your prompts, runs, images, API keys and webhooks are gone, and this address is no longer on file.".into(),
            "Your credit history is kept without your name, because our books must balance.".into(),
        ],
        action: None,
        footer: "This is the last message we send to this address.".into(),
    };
    mail::enqueue(&mut tx, None, &goodbye).await?;
    tx.commit().await?;
    let mut left = 0;
    for key in &keys {
        if let Err(err) = store.delete(key).await {
            left += 1;
            tracing::warn!(key, "deleting a deleted account's object: {err:#} (the orphan sweep will retry)");
        }
    }
    tracing::info!(%user_id, objects = keys.len(), left, "account deleted");
    Ok(Ok(()))
}

/// Everything the account holds, as one JSON document: the profile, the runs (prompts,
/// settings, each model's outcome and image link) and the credit history.
pub async fn export(pool: &PgPool, config: &Config, user_id: Uuid) -> Result<serde_json::Value, LifecycleError> {
    let profile: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT json_build_object('email', email, 'role', role, 'created_at', created_at,
                                  'email_verified_at', email_verified_at)
         FROM app_user WHERE user_id = $1 AND deleted_at IS NULL",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let media = config.absolute_url("/media/");
    let runs: serde_json::Value = sqlx::query_scalar(
        "SELECT COALESCE(json_agg(json_build_object(
                    'run_id', r.run_id, 'created_at', r.created_at, 'prompt', r.prompt, 'mode', r.mode,
                    'aspect_ratio', r.aspect_ratio, 'seed', r.seed, 'total_price', r.total_price,
                    'reference_image', CASE WHEN r.reference_key IS NULL THEN NULL ELSE $2 || r.reference_key END,
                    'jobs', (SELECT COALESCE(json_agg(json_build_object(
                                 'model', j.model_slug, 'variant', j.variant_slug, 'status', j.status,
                                 'price', j.price, 'charged', j.charged, 'reason', j.reason,
                                 'image', CASE WHEN j.image_key IS NULL THEN NULL ELSE $2 || j.image_key END,
                                 'width', j.image_width, 'height', j.image_height, 'finished_at', j.finished_at)
                             ORDER BY j.position), '[]'::json)
                             FROM generation_job j WHERE j.run_id = r.run_id))
                ORDER BY r.created_at, r.run_id), '[]'::json)
         FROM generation_run r WHERE r.user_id = $1",
    )
    .bind(user_id)
    .bind(&media)
    .fetch_one(pool)
    .await?;
    let credits: serde_json::Value = sqlx::query_scalar(
        "SELECT COALESCE(json_agg(json_build_object(
                    'at', e.created_at, 'kind', t.kind, 'memo', t.memo, 'amount', e.amount,
                    'balance_after', e.balance_after, 'run_id', t.run_id, 'payment_id', t.payment_id)
                ORDER BY e.entry_id), '[]'::json)
         FROM ledger_entry e JOIN ledger_transfer t USING (transfer_id)
         JOIN ledger_account a ON a.account_id = e.account_id
         WHERE a.user_id = $1",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    let payments: serde_json::Value = sqlx::query_scalar(
        "SELECT COALESCE(json_agg(json_build_object(
                    'payment_id', payment_id, 'pack', pack_name, 'credits', credits, 'amount_cents', amount_cents,
                    'currency', currency, 'status', status, 'created_at', created_at, 'paid_at', paid_at)
                ORDER BY created_at), '[]'::json)
         FROM payment WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    let sharing = crate::sharing::export(pool, user_id).await?;
    let balance = ledger::balance(pool, user_id).await?;
    Ok(json!({
        "exported_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "profile": profile,
        "balance": { "available": balance.available, "held": balance.held },
        "runs": runs,
        "credit_history": credits,
        "payments": payments,
        "shared_runs": sharing["shares"],
        "reports": sharing["reports"],
    }))
}
