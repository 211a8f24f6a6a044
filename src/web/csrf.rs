//! CSRF protection for forms: a random token bound to the session, sent back by every
//! state-changing form as the hidden field `csrf_token`, compared in constant time.

use base64::Engine;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use crate::web::error::AppError;

const KEY: &str = "csrf";

/// The session's token, created on first use.
pub async fn token(session: &Session) -> Result<String, AppError> {
    if let Some(token) = session.get::<String>(KEY).await.map_err(session_error)? {
        return Ok(token);
    }
    let bytes: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    session.insert(KEY, &token).await.map_err(session_error)?;
    Ok(token)
}

/// Checks a submitted token against the session's; a missing or wrong token is [`AppError::CsrfFailed`].
pub async fn verify(session: &Session, submitted: &str) -> Result<(), AppError> {
    let expected = session.get::<String>(KEY).await.map_err(session_error)?;
    match expected {
        Some(expected) if !submitted.is_empty() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes())) => {
            Ok(())
        }
        _ => Err(AppError::CsrfFailed),
    }
}

pub fn session_error(err: tower_sessions::session::Error) -> AppError {
    AppError::Internal(anyhow::anyhow!("session: {err}"))
}

/// Forgets the session's token so the next form gets a new one (at log-in, with the new
/// session id: a token seen before log-in is worthless after it).
pub async fn reset(session: &Session) -> Result<(), AppError> {
    session.remove_value(KEY).await.map_err(session_error)?;
    Ok(())
}
