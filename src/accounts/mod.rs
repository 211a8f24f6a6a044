//! Accounts: users, their roles, passwords and sessions (who is signed in).

use sqlx::PgPool;
use tower_sessions::Session;
use uuid::Uuid;

use crate::{ledger, web::error::AppError};

pub mod session_store;

/// Session key holding the signed-in user's id.
pub const SESSION_USER_KEY: &str = "user_id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Loads the user signed in on `session`, if any (a deleted user counts as signed out).
pub async fn current_user(pool: &PgPool, session: &Session) -> Result<Option<CurrentUser>, AppError> {
    let Some(user_id) = session.get::<Uuid>(SESSION_USER_KEY).await.map_err(crate::web::csrf::session_error)? else {
        return Ok(None);
    };
    let row: Option<(String, String)> = sqlx::query_as("SELECT email, role FROM app_user WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?;
    let Some((email, role)) = row else {
        return Ok(None);
    };
    let balance = ledger::balance(pool, user_id).await.map_err(|e| AppError::Internal(e.into()))?;
    Ok(Some(CurrentUser {
        id: user_id,
        email,
        role: if role == "admin" { Role::Admin } else { Role::User },
        available: balance.available,
        held: balance.held,
    }))
}

pub fn routes() -> axum::Router<crate::state::AppState> {
    axum::Router::new()
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
        .bind(match role {
            Role::User => "user",
            Role::Admin => "admin",
        })
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
