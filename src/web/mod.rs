//! The HTTP edge toolkit shared by every domain's route files: the error type and its pages
//! ([`error`]), who is asking ([`auth`]: extractors for the viewer, a signed-in user, an
//! administrator, an API key), CSRF-checked forms ([`csrf`]), input that cannot be stored
//! ([`input`]: NUL, broken UTF-8; JSON bodies), the page layout ([`layout`]),
//! the client's address for rate limits ([`client_ip`]), static assets ([`assets`]), template
//! rendering ([`render`]) and the path-recording router ([`routes::Routes`]).
//!
//! `web` knows the domain cores (their types and errors) but no route file; the router itself
//! is assembled above every domain, in `crate::app`.

use axum::response::{Html, IntoResponse, Response};

pub mod assets;
pub mod auth;
pub mod client_ip;
pub mod csrf;
pub mod error;
pub mod input;
pub mod layout;
pub mod page_cache;
pub mod pagination;
pub mod rate_limit;
pub mod routes;
pub mod viewer;

pub use auth::{Admin, ApiUser, SignedIn, Viewer};
pub use csrf::{CsrfForm, CsrfMultipart};
pub use error::{AppError, Result};
pub use input::ApiJson;
pub use layout::Layout;
pub use routes::Routes;

/// Renders an askama template as an HTML response; a rendering failure is a logged 500.
pub fn render<T: askama::Template>(template: &T) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            AppError::Internal(anyhow::anyhow!("rendering {}: {err}", std::any::type_name::<T>())).into_response()
        }
    }
}
