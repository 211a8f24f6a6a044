//! Administration: credit adjustments (the admin page and `faceoff admin grant` both call
//! [`adjust_credits`]) and promoting a user to admin.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    accounts::{self, Role},
    ledger::{self, Kind, LedgerError, NewTransfer, Refs, System},
};

/// The largest single adjustment, either way (a typo guard, not a business rule).
pub const MAX_ADJUSTMENT: i64 = 1_000_000_000;
/// The longest reason kept in the ledger memo.
pub const MAX_REASON_CHARS: usize = 500;
/// The longest idempotency key of an adjustment.
pub const MAX_KEY_CHARS: usize = 100;

#[derive(Debug, Clone)]
pub struct Adjustment {
    pub user_id: Uuid,
    pub email: String,
    /// Signed: positive credits were added, negative removed.
    pub amount: i64,
    pub balance: ledger::Balance,
    /// True when the key had already been used for this very adjustment (nothing new happened).
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    #[error("no user has the email {0}")]
    UnknownUser(String),
    #[error("the amount must be a non-zero whole number of credits between -{MAX_ADJUSTMENT} and {MAX_ADJUSTMENT}")]
    InvalidAmount,
    #[error("a reason is required (at most {MAX_REASON_CHARS} characters)")]
    InvalidReason,
    #[error("the adjustment's key must be 1 to {MAX_KEY_CHARS} printable characters")]
    InvalidKey,
    #[error("cannot remove {need} credits: the user has only {have} available")]
    Insufficient { need: i64, have: i64 },
    #[error("this adjustment was already submitted with different values")]
    KeyConflict,
    #[error(transparent)]
    Ledger(LedgerError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<LedgerError> for AdjustError {
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::InsufficientCredits { need, have } => AdjustError::Insufficient { need, have },
            LedgerError::KeyConflict(_) => AdjustError::KeyConflict,
            LedgerError::Db(err) => AdjustError::Db(err),
            other => AdjustError::Ledger(other),
        }
    }
}

/// A non-zero whole number of credits within [`MAX_ADJUSTMENT`] either way (no `abs()`, which
/// overflows on `i64::MIN`).
pub fn valid_amount(amount: i64) -> bool {
    amount != 0 && (-MAX_ADJUSTMENT..=MAX_ADJUSTMENT).contains(&amount)
}

/// 1 to [`MAX_KEY_CHARS`] printable characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().count() <= MAX_KEY_CHARS && !key.chars().any(char::is_control)
}

/// Adds (`amount > 0`) or removes (`amount < 0`) credits of the user with `email`: one ledger
/// transfer between their wallet and the `adjustments` system account, kind `adjustment`, memo =
/// `reason`, under the idempotency key `adjustment:{key}` (the same key and values again is a
/// no-op). A removal never takes a wallet below zero ([`AdjustError::Insufficient`]).
pub async fn adjust_credits(
    pool: &PgPool,
    email: &str,
    amount: i64,
    reason: &str,
    key: &str,
) -> Result<Adjustment, AdjustError> {
    let reason = reason.trim();
    if !valid_amount(amount) {
        return Err(AdjustError::InvalidAmount);
    }
    if !valid_key(key) {
        return Err(AdjustError::InvalidKey);
    }
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(AdjustError::InvalidReason);
    }
    let mut tx = crate::db::begin(pool).await?;
    let user = accounts::find_by_email(&mut *tx, email)
        .await?
        .ok_or_else(|| AdjustError::UnknownUser(email.trim().to_string()))?;
    let wallet = ledger::wallet(&mut *tx, user.id).await?;
    let system = ledger::system_account(&mut *tx, System::Adjustments).await?;
    let (debit, credit) = if amount > 0 { (system, wallet) } else { (wallet, system) };
    let key = format!("adjustment:{key}");
    let transfer = ledger::transfer(
        &mut tx,
        NewTransfer {
            key: &key,
            debit,
            credit,
            amount: amount.abs(),
            kind: Kind::Adjustment,
            memo: reason,
            refs: Refs::default(),
        },
    )
    .await?;
    let balance = ledger::balance(&mut *tx, user.id).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, amount, replayed = transfer.replayed, "credit adjustment");
    Ok(Adjustment { user_id: user.id, email: user.email, amount, balance, replayed: transfer.replayed })
}

/// Makes the user with this email an admin.
pub async fn promote(pool: &PgPool, email: &str) -> Result<Uuid, AdjustError> {
    accounts::set_role(pool, email, Role::Admin)
        .await?
        .ok_or_else(|| AdjustError::UnknownUser(email.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_keys_are_checked_without_overflow() {
        assert!(valid_amount(5) && valid_amount(-5) && valid_amount(MAX_ADJUSTMENT) && valid_amount(-MAX_ADJUSTMENT));
        assert!(!valid_amount(0) && !valid_amount(i64::MIN) && !valid_amount(i64::MAX));
        assert!(valid_key("0196-abc") && !valid_key("") && !valid_key(&"k".repeat(101)) && !valid_key("a\nb"));
    }
}
