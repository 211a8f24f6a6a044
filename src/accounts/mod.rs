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
pub async fn current_user(
    pool: &PgPool,
    session: &Session,
) -> Result<Option<CurrentUser>, AppError> {
    let Some(user_id) = session
        .get::<Uuid>(SESSION_USER_KEY)
        .await
        .map_err(crate::web::csrf::session_error)?
    else {
        return Ok(None);
    };
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT email, role FROM app_user WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    let Some((email, role)) = row else {
        return Ok(None);
    };
    let balance = ledger::balance(pool, user_id)
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok(Some(CurrentUser {
        id: user_id,
        email,
        role: if role == "admin" {
            Role::Admin
        } else {
            Role::User
        },
        available: balance.available,
        held: balance.held,
    }))
}

pub fn routes() -> axum::Router<crate::state::AppState> {
    axum::Router::new()
}
