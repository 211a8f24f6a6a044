//! Payments: credit packs ([`packs`]), checkout through Stripe or the embedded sandbox
//! ([`provider`]), the signed webhook that fulfils paid checkouts ([`webhook`]), and the
//! `/credits` pages ([`pages`], routed with the webhook endpoint in [`routes`]). This module owns the `payment` and `stripe_event` tables.
//!
//! Fulfilment ([`fulfil`]) is the single code path that turns a paid Checkout Session into
//! credits: the webhook, Stripe's success page and the sandbox's "pay" button all end there.
//! It credits a payment at most once: the payment row is locked, the ledger transfer carries the
//! key `checkout:{session_id}`, and the payment's session id and transfer id are unique.

use std::sync::Arc;

use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    config::{Config, Secret},
    ledger,
};

pub mod api;
pub mod packs;
pub mod pages;
pub mod provider;
pub mod routes;
pub mod webhook;

pub use packs::{Pack, Packs};
pub use provider::{CheckoutProvider, ProviderKind, SessionObject};

/// Everything payments need at run time (held in the application state).
#[derive(Clone)]
pub struct Payments {
    pub packs: Arc<Packs>,
    pub provider: Arc<dyn CheckoutProvider>,
    /// Verifies (and, for the sandbox, signs) webhook events: `STRIPE_WEBHOOK_SECRET`, or a
    /// random secret of this process when none is configured.
    pub webhook_secret: Arc<Secret>,
}

impl Payments {
    /// Loads the packs (a bad file is a start-up error) and picks the provider: Stripe when
    /// `STRIPE_SECRET_KEY` is set, the sandbox otherwise.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let packs = Packs::load()?;
        let provider: Arc<dyn CheckoutProvider> = match &config.stripe_secret_key {
            Some(key) => Arc::new(provider::Stripe::new(key.clone(), config.stripe_api_url.clone())?),
            None => Arc::new(provider::Sandbox),
        };
        let webhook_secret = match &config.stripe_webhook_secret {
            Some(secret) => secret.clone(),
            None => {
                if config.stripe_secret_key.is_some() {
                    tracing::warn!(
                        "STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not: Stripe's webhooks will be \
                         rejected; payments are then confirmed only when the buyer returns to the success page"
                    );
                }
                let bytes: [u8; 32] = rand::random();
                Secret::new(format!("whsec_local_{}", hex::encode(bytes)))
            }
        };
        Ok(Payments { packs: Arc::new(packs), provider, webhook_secret: Arc::new(webhook_secret) })
    }

    pub fn is_sandbox(&self) -> bool {
        self.provider.kind() == ProviderKind::Sandbox
    }
}

/// A payment's state: `pending` until the provider reports it paid, failed, or the buyer cancels.
/// The `status` column (`payment_status_check`); sqlx decodes the text directly, and another
/// value is a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Status {
    Pending,
    Paid,
    Failed,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Paid => "paid",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::Paid => "Paid",
            Status::Failed => "Failed",
            Status::Canceled => "Canceled",
        }
    }
    /// The badge modifier class for this status.
    pub fn badge(self) -> &'static str {
        match self {
            Status::Pending => "badge-warn",
            Status::Paid => "badge-good",
            Status::Failed => "badge-bad",
            Status::Canceled => "",
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct Payment {
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub pack_slug: String,
    pub pack_name: String,
    pub credits: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub provider: ProviderKind,
    pub status: Status,
    pub checkout_session_id: Option<String>,
    pub checkout_url: Option<String>,
    pub transfer_id: Option<i64>,
    pub failure_reason: Option<String>,
    /// Why a paid checkout was not credited automatically (see [`Fulfilment::NeedsReview`]).
    pub review_reason: Option<String>,
    pub paid_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl Payment {
    pub fn price(&self) -> String {
        packs::format_money(self.amount_cents, &self.currency)
    }
    pub fn href(&self) -> String {
        format!("/credits/payments/{}", self.payment_id)
    }
}

const PAYMENT_COLUMNS: &str = "payment_id, user_id, pack_slug, pack_name, credits, amount_cents, currency, provider, \
     status, checkout_session_id, checkout_url, transfer_id, failure_reason, review_reason, paid_at, created_at";

/// Records a pending payment for `pack`.
pub async fn create_payment(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    pack: &Pack,
    currency: &str,
    provider: ProviderKind,
) -> Result<Payment, sqlx::Error> {
    let sql = format!(
        "INSERT INTO payment (payment_id, user_id, pack_slug, pack_name, credits, amount_cents, currency, provider)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {PAYMENT_COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(&pack.slug)
        .bind(&pack.name)
        .bind(pack.credits)
        .bind(pack.price_cents)
        .bind(currency)
        .bind(provider)
        .fetch_one(db)
        .await
}

pub async fn get_payment(db: impl PgExecutor<'_>, payment_id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payment WHERE payment_id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(payment_id).fetch_optional(db).await
}

/// A payment of `user_id` (another user's payment is `None`, as if it did not exist).
pub async fn get_user_payment(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    payment_id: Uuid,
) -> Result<Option<Payment>, sqlx::Error> {
    Ok(get_payment(db, payment_id).await?.filter(|p| p.user_id == user_id))
}

async fn lock_payment(db: &mut PgConnection, payment_id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payment WHERE payment_id = $1 FOR UPDATE");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(payment_id).fetch_optional(db).await
}

/// The most recent payments of a user, newest first.
pub async fn user_payments(db: impl PgExecutor<'_>, user_id: Uuid, limit: i64) -> Result<Vec<Payment>, sqlx::Error> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payment WHERE user_id = $1 ORDER BY created_at DESC, payment_id DESC LIMIT $2"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(limit).fetch_all(db).await
}

/// Stores the provider's Checkout Session for a pending payment.
pub async fn attach_session(
    db: impl PgExecutor<'_>,
    payment_id: Uuid,
    session_id: &str,
    url: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payment SET checkout_session_id = $2, checkout_url = $3
         WHERE payment_id = $1 AND status <> 'paid'",
    )
    .bind(payment_id)
    .bind(session_id)
    .bind(url)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a pending payment failed (the provider refused it, it expired, or its asynchronous
/// payment failed). Returns whether it changed.
pub async fn mark_failed(db: impl PgExecutor<'_>, payment_id: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE payment SET status = 'failed', failure_reason = $2 WHERE payment_id = $1 AND status = 'pending'",
    )
    .bind(payment_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a pending payment of `user_id` canceled by its buyer. Returns whether it changed.
pub async fn mark_canceled(db: impl PgExecutor<'_>, user_id: Uuid, payment_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE payment SET status = 'canceled', failure_reason = 'canceled at checkout'
         WHERE payment_id = $1 AND user_id = $2 AND status = 'pending'",
    )
    .bind(payment_id)
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What [`fulfil`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilment {
    /// Credits were added now.
    Credited { payment_id: Uuid, credits: i64 },
    /// The payment had already been credited (a replayed or concurrent delivery).
    AlreadyPaid { payment_id: Uuid },
    /// The session is not one of ours or does not match its payment; nothing changed.
    Ignored(String),
    /// Paid, but the amount paid could not be matched to the pack's price (not reported, or
    /// another amount or currency): not credited, recorded on the payment for review.
    NeedsReview(String),
}

impl Fulfilment {
    pub fn outcome(&self) -> &'static str {
        match self {
            Fulfilment::Credited { .. } => "credited",
            Fulfilment::AlreadyPaid { .. } => "already_paid",
            Fulfilment::Ignored(_) => "ignored",
            Fulfilment::NeedsReview(_) => "needs_review",
        }
    }
}

/// The payment a Checkout Session belongs to: its metadata, else its `client_reference_id`.
pub fn session_payment_id(session: &SessionObject) -> Option<Uuid> {
    session.metadata.get("payment_id").or(session.client_reference_id.as_ref()).and_then(|id| Uuid::parse_str(id).ok())
}

/// Credits a paid Checkout Session's pack to its buyer, exactly once, inside the caller's
/// transaction. The caller has checked that the session is paid.
#[tracing::instrument(skip_all, fields(session_id = %session.id))]
pub async fn fulfil(tx: &mut PgConnection, session: &SessionObject) -> Result<Fulfilment, ledger::LedgerError> {
    let Some(payment_id) = session_payment_id(session) else {
        return Ok(Fulfilment::Ignored("the session names no payment of ours".into()));
    };
    // The row lock makes the webhook, the success page and redeliveries take turns.
    let Some(payment) = lock_payment(&mut *tx, payment_id).await? else {
        return Ok(Fulfilment::Ignored(format!("unknown payment {payment_id}")));
    };
    if payment.status == Status::Paid {
        return Ok(Fulfilment::AlreadyPaid { payment_id });
    }
    if let Some(own) = &payment.checkout_session_id
        && own != &session.id
    {
        tracing::error!(%payment_id, own, "a paid checkout session does not match its payment's session");
        return Ok(Fulfilment::Ignored("the session does not match the payment".into()));
    }
    // Credit only what is known to be paid in full: a missing amount or currency is not taken
    // on trust.
    let problem = match (session.amount_total, session.currency.as_deref()) {
        (None, _) => Some("the provider reported no amount paid".to_string()),
        (_, None) => Some("the provider reported no currency".to_string()),
        (Some(total), Some(currency))
            if total != payment.amount_cents || !currency.eq_ignore_ascii_case(&payment.currency) =>
        {
            Some(format!("paid {total} {currency}, the pack costs {} {}", payment.amount_cents, payment.currency))
        }
        _ => None,
    };
    if let Some(problem) = problem {
        tracing::error!(%payment_id, session_id = %session.id, problem, "a paid checkout needs review; not credited");
        sqlx::query("UPDATE payment SET review_reason = $2 WHERE payment_id = $1 AND status <> 'paid'")
            .bind(payment_id)
            .bind(&problem)
            .execute(&mut *tx)
            .await?;
        return Ok(Fulfilment::NeedsReview(problem));
    }
    let wallet = ledger::wallet(&mut *tx, payment.user_id).await?;
    let sales = ledger::system_account(&mut *tx, ledger::System::TopupSales).await?;
    let key = format!("checkout:{}", session.id);
    let memo = format!("{} pack: {} credits", payment.pack_name, payment.credits);
    let transfer = ledger::transfer(
        &mut *tx,
        ledger::NewTransfer {
            key: &key,
            debit: sales,
            credit: wallet,
            amount: payment.credits,
            kind: ledger::Kind::Topup,
            memo: &memo,
            refs: ledger::Refs { payment_id: Some(payment_id), ..Default::default() },
        },
    )
    .await?;
    sqlx::query(
        "UPDATE payment SET status = 'paid', checkout_session_id = $2, transfer_id = $3, paid_at = now(),
                failure_reason = NULL
         WHERE payment_id = $1 AND status <> 'paid'",
    )
    .bind(payment_id)
    .bind(&session.id)
    .bind(transfer.transfer_id)
    .execute(&mut *tx)
    .await?;
    tracing::info!(%payment_id, credits = payment.credits, "top-up credited");
    metrics::counter!("topups_credited_total").increment(1);
    metrics::counter!("topup_credits_total").increment(payment.credits.unsigned_abs());
    Ok(Fulfilment::Credited { payment_id, credits: payment.credits })
}
