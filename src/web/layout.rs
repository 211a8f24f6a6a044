//! The data every page's layout (`templates/base.html`) needs: who is signed in and their
//! balance (shown in the header), the CSRF token for forms, the current path, and asset URLs.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use tower_sessions::Session;

use crate::{
    accounts::{self, CurrentUser},
    state::AppState,
    web::{assets::Assets, csrf, error::AppError},
};

pub struct Layout {
    pub user: Option<CurrentUser>,
    /// Empty unless the page has a form ([`Layout::with_csrf`]) or a user is signed in.
    pub csrf_token: String,
    pub path: String,
    pub assets: Arc<Assets>,
    pub session: Option<Session>,
    pub public_url: String,
}

impl Layout {
    pub async fn load(state: &AppState, session: Option<Session>, path: &str) -> Result<Self, AppError> {
        let user = match &session {
            Some(session) => accounts::current_user(&state.pool, session).await?,
            None => None,
        };
        let csrf_token = match (&user, &session) {
            (Some(_), Some(session)) => csrf::token(session).await?,
            _ => String::new(),
        };
        Ok(Layout {
            user,
            csrf_token,
            path: path.to_string(),
            assets: state.assets.clone(),
            session,
            public_url: state.config.public_url.as_str().trim_end_matches('/').to_string(),
        })
    }

    /// A layout for an error page: never fails (a broken database still gets a page).
    pub async fn for_error(state: &AppState, session: Option<Session>, path: &str) -> Self {
        match Layout::load(state, session, path).await {
            Ok(layout) => layout,
            Err(_) => Layout {
                user: None,
                csrf_token: String::new(),
                path: path.to_string(),
                assets: state.assets.clone(),
                session: None,
                public_url: state.config.public_url.as_str().trim_end_matches('/').to_string(),
            },
        }
    }

    fn session(&self) -> Result<&Session, AppError> {
        self.session.as_ref().ok_or_else(|| AppError::Internal(anyhow::anyhow!("session layer missing")))
    }

    /// Makes sure the page can carry a CSRF token (forms for anonymous visitors: sign-up, log-in).
    pub async fn with_csrf(mut self) -> Result<Self, AppError> {
        if self.csrf_token.is_empty() {
            self.csrf_token = csrf::token(self.session()?).await?;
        }
        Ok(self)
    }

    /// Checks a submitted form's `csrf_token` against this session's ([`csrf::verify`]).
    pub async fn verify_csrf(&self, submitted: &str) -> Result<(), AppError> {
        csrf::verify(self.session()?, submitted).await
    }

    /// The signed-in user, or 401 (which browsers see as a redirect to the log-in page).
    pub fn require_user(&self) -> Result<&CurrentUser, AppError> {
        self.user.as_ref().ok_or(AppError::Unauthorized)
    }

    pub fn asset(&self, name: &str) -> String {
        self.assets.url(name)
    }

    /// `aria-current="page"` for the navigation link whose section we are in.
    pub fn current(&self, prefix: &str) -> &'static str {
        let active = if prefix == "/" {
            self.path == "/"
        } else {
            self.path == prefix || self.path.starts_with(&format!("{prefix}/"))
        };
        if active { "page" } else { "false" }
    }

    pub fn is_signed_in(&self) -> bool {
        self.user.is_some()
    }
}

impl FromRequestParts<AppState> for Layout {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let session = parts.extensions.get::<Session>().cloned();
        Layout::load(state, session, parts.uri.path()).await
    }
}
