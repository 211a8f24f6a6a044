//! Who is asking, as extractors a handler cannot forget to call:
//!
//! - [`Viewer`]: the signed-in user, if any, loaded once per request (session → user → balance)
//!   and shared by everything in the request that asks (the layout, the checks below, the error
//!   page).
//! - [`SignedIn`]: a signed-in user or [`AppError::Unauthorized`] (pages answer with a redirect to
//!   the log-in page, `/api` with a JSON 401).
//! - [`Admin`]: a signed-in administrator, 401 or 403 otherwise.
//! - [`ApiUser`]: the owner of the personal API key in `Authorization: Bearer fo_…` (the JSON API
//!   does not use cookies, so it needs no CSRF token).

use std::sync::{Arc, OnceLock};

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
};
use sqlx::PgPool;
use tower_sessions::Session;
use uuid::Uuid;

use crate::{
    accounts::{
        self, CurrentUser, SESSION_USER_KEY,
        api_keys::{self, KeyCache},
        rate_limit::ApiLimits,
    },
    config::Config,
    web::{client_ip::ClientIp, error::AppError, rate_limit::QuotaSlot},
};

/// The signed-in user of this request, if any.
#[derive(Debug, Clone)]
pub struct Viewer(pub Option<CurrentUser>);

impl Viewer {
    pub fn user(&self) -> Option<&CurrentUser> {
        self.0.as_ref()
    }

    pub fn user_id(&self) -> Option<Uuid> {
        self.0.as_ref().map(|u| u.id)
    }
}

/// The request's slot for its [`Viewer`], put in the request extensions by the error middleware
/// (which renders error pages with the same user after the handler ran): the user is loaded at
/// most once per request.
#[derive(Clone, Default)]
pub struct ViewerSlot(Arc<OnceLock<Viewer>>);

impl ViewerSlot {
    pub fn get(&self) -> Option<&Viewer> {
        self.0.get()
    }
}

/// The day (since the epoch) a signed-in session last moved its expiry.
const REFRESHED_KEY: &str = "refreshed_day";

impl Viewer {
    /// Loads the user signed in on `session` (none without a session layer). A signed-in
    /// session's expiry moves with its use (`Expiry::OnInactivity`: it ends after 14 idle
    /// days): the session store writes a session only when it changed, so once a day the
    /// session records the day, which saves it with a new expiry.
    pub async fn load(pool: &PgPool, session: Option<&Session>) -> Result<Viewer, AppError> {
        let Some(session) = session else { return Ok(Viewer(None)) };
        let today = time::OffsetDateTime::now_utc().unix_timestamp().div_euclid(86_400);
        // The usual case, a stored session this request has not changed: the session's user
        // and their balance in one statement, without loading the session record itself.
        if let Some(id) = session.id().filter(|_| !session.is_modified())
            && let Some((user, refreshed_day)) = accounts::session_user(pool, &id.to_string(), REFRESHED_KEY).await?
        {
            if refreshed_day != Some(today) {
                session.insert(REFRESHED_KEY, today).await?;
            }
            return Ok(Viewer(Some(user)));
        }
        // A session this request created or changed (say, a log-in): what it holds in memory. Or
        // a cookie with no signed-in session behind it: loading the record finds a session
        // without a user, or none (logged out, expired), and then the session layer clears the
        // browser's cookie, which would otherwise bring a dead session with every request.
        let Some(user_id) = session.get::<Uuid>(SESSION_USER_KEY).await? else {
            return Ok(Viewer(None));
        };
        let user = accounts::current_user(pool, user_id).await?;
        if user.is_some() && session.get::<i64>(REFRESHED_KEY).await? != Some(today) {
            session.insert(REFRESHED_KEY, today).await?;
        }
        Ok(Viewer(user))
    }
}

impl<S> FromRequestParts<S> for Viewer
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let slot = parts.extensions.get::<ViewerSlot>().cloned();
        if let Some(viewer) = slot.as_ref().and_then(ViewerSlot::get) {
            return Ok(viewer.clone());
        }
        let session = parts.extensions.get::<Session>().cloned();
        let viewer = Viewer::load(&PgPool::from_ref(state), session.as_ref()).await?;
        match slot {
            Some(slot) => Ok(slot.0.get_or_init(|| viewer).clone()),
            None => {
                // No error middleware (a bare router in a unit test): cache in the request itself.
                parts.extensions.insert(ViewerSlot(Arc::new(OnceLock::from(viewer.clone()))));
                Ok(viewer)
            }
        }
    }
}

/// A signed-in user; anyone else gets [`AppError::Unauthorized`].
#[derive(Debug, Clone)]
pub struct SignedIn(pub CurrentUser);

impl<S> FromRequestParts<S> for SignedIn
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Viewer::from_request_parts(parts, state).await?.0 {
            Some(user) => Ok(SignedIn(user)),
            None => Err(AppError::Unauthorized),
        }
    }
}

/// A signed-in administrator; 401 for visitors, 403 for other users.
#[derive(Debug, Clone)]
pub struct Admin(pub CurrentUser);

impl<S> FromRequestParts<S> for Admin
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let SignedIn(user) = SignedIn::from_request_parts(parts, state).await?;
        if user.is_admin() {
            Ok(Admin(user))
        } else {
            Err(AppError::Forbidden("this page is for administrators only".into()))
        }
    }
}

/// The user an API request acts for (their API key is valid and not revoked). The request is
/// counted against the key's rate limit (`web::rate_limit`): over it, a `429`. A request without
/// a valid key is counted against the client's address and refused with a `401` (or a `429`).
#[derive(Debug, Clone, Copy)]
pub struct ApiUser {
    pub user_id: Uuid,
    pub api_key_id: Uuid,
}

impl<S> FromRequestParts<S> for ApiUser
where
    PgPool: FromRef<S>,
    Arc<ApiLimits>: FromRef<S>,
    Arc<KeyCache>: FromRef<S>,
    Arc<Config>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let limits = Arc::<ApiLimits>::from_ref(state);
        let slot = parts.extensions.get::<QuotaSlot>().cloned().unwrap_or_default();
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|s| api_keys::looks_like_key(s));
        let owner = match secret {
            Some(secret) => Arc::<KeyCache>::from_ref(state).authenticate(&PgPool::from_ref(state), secret).await?,
            None => None,
        };
        let Some(owner) = owner else {
            if !slot.is_set()
                && let Ok(ClientIp(address)) = ClientIp::from_request_parts(parts, state).await
                && let Some(quota) = limits.check_address(address).await
            {
                slot.set(quota);
                if let Some(retry_after) = quota.retry_after {
                    return Err(AppError::RateLimited { retry_after });
                }
            }
            return Err(AppError::Unauthorized);
        };
        if let Some(quota) = limits.check_key(owner.api_key_id).await {
            slot.set(quota);
            if let Some(retry_after) = quota.retry_after {
                return Err(AppError::RateLimited { retry_after });
            }
        }
        Ok(ApiUser { user_id: owner.user_id, api_key_id: owner.api_key_id })
    }
}
