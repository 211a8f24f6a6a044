//! `GET /media/{key}`: stored images, with access control and cache headers.

use axum::{
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{
    state::AppState,
    web::{AppError, Routes, Viewer},
};

pub fn routes() -> Routes<AppState> {
    Routes::new().route("/media/{*key}", get(serve_media))
}

/// Serves a stored object. Private objects are visible only to their owner (and admins); to
/// anyone else they do not exist (404, so ids cannot be probed).
async fn serve_media(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(key): Path<String>,
) -> Result<Response, AppError> {
    let media = super::find(&state.pool, &key).await?.ok_or_else(AppError::not_found)?;
    if let Some(owner) = media.owner_user_id {
        let allowed = viewer.user().is_some_and(|u| u.id == owner || u.is_admin());
        if !allowed {
            return Err(AppError::NotFound("we could not find that image".into()));
        }
    }
    let bytes =
        state.store.get(&key).await?.ok_or_else(|| AppError::NotFound("that image is no longer stored".into()))?;
    let cache = if media.owner_user_id.is_some() {
        "private, max-age=86400, immutable"
    } else {
        "public, max-age=31536000, immutable"
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("inline"));
    Ok(response)
}
