//! The data every page's layout (`templates/base.html`) needs: who is signed in and their
//! balance (shown in the header), the CSRF token for its forms, the current path, and asset URLs.
//! An extractor: a handler that renders a page takes a `Layout` and passes it to its template.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::request::Parts,
};
use sqlx::PgPool;

use crate::{
    accounts::CurrentUser,
    config::Config,
    web::{assets::Assets, auth::Viewer, csrf::CsrfContext, error::AppError},
};

pub struct Layout {
    pub user: Option<CurrentUser>,
    pub path: String,
    pub public_url: String,
    assets: Arc<Assets>,
    csrf: Option<CsrfContext>,
}

impl Layout {
    pub fn new(viewer: Viewer, csrf: Option<CsrfContext>, assets: Arc<Assets>, config: &Config, path: &str) -> Self {
        Layout {
            user: viewer.0,
            path: path.to_string(),
            public_url: config.public_url.as_str().trim_end_matches('/').to_string(),
            assets,
            csrf,
        }
    }

    /// The CSRF token for a form on this page (see `web::csrf`).
    pub fn csrf_token(&self) -> String {
        match &self.csrf {
            Some(csrf) => csrf.token_for(self.user.as_ref().map(|u| u.id)),
            None => String::new(),
        }
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

    /// The signed-in user's available credits (0 for visitors).
    pub fn available(&self) -> i64 {
        self.user.as_ref().map_or(0, |u| u.available)
    }
}

impl<S> FromRequestParts<S> for Layout
where
    PgPool: FromRef<S>,
    Arc<Assets>: FromRef<S>,
    Arc<Config>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        let csrf = parts.extensions.get::<CsrfContext>().cloned();
        let config = Arc::<Config>::from_ref(state);
        Ok(Layout::new(viewer, csrf, Arc::<Assets>::from_ref(state), &config, parts.uri.path()))
    }
}
