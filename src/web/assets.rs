//! Static assets (`assets/`: CSS, JS, fonts, icons), served by the app itself with cache-busted
//! URLs: templates link `/assets/app.css?v=<content hash>`, and such URLs are cached for a year.
//! The files found at start-up are held in memory with their brotli and gzip variants
//! (compressed once, `web::page_cache::Encoded`) and an ETag; a file added later is read from
//! the directory.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, Method, header},
    middleware::{self, Next},
    response::Response,
};
use bytes::Bytes;
use tower::ServiceExt;

use super::page_cache::Encoded;
use sha2::{Digest, Sha256};
use tower_http::services::ServeDir;

/// Content hashes of every file under the assets directory, computed once at start-up.
#[derive(Debug, Default)]
pub struct Assets {
    dir: PathBuf,
    hashes: HashMap<String, String>,
    /// The files, compressed once, by path under the directory.
    files: HashMap<String, Arc<(Encoded, HeaderValue)>>,
}

impl Assets {
    /// Finds the assets directory (`./assets`, else the one next to the crate's manifest) and
    /// hashes its files.
    pub fn load() -> anyhow::Result<Self> {
        let dir = crate::config::locate_dir("assets");
        let mut hashes = HashMap::new();
        let mut files = HashMap::new();
        hash_dir(&dir, &dir, &mut hashes, &mut files)?;
        Ok(Assets { dir, hashes, files })
    }

    /// The cache-busted URL of an asset, e.g. `/assets/app.css?v=1a2b3c4d5e`.
    pub fn url(&self, name: &str) -> String {
        match self.hashes.get(name) {
            Some(hash) => format!("/assets/{name}?v={hash}"),
            None => format!("/assets/{name}"),
        }
    }

    /// The router serving `/assets/*`: from memory, or from the directory for a file added
    /// after start-up.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let files = Arc::new(self.files.clone());
        let dir = ServeDir::new(&self.dir).precompressed_br().precompressed_gzip();
        let serve = move |req: Request| {
            let (files, dir) = (files.clone(), dir.clone());
            async move {
                let name = req.uri().path().trim_start_matches('/');
                let cached = matches!(*req.method(), Method::GET | Method::HEAD).then(|| files.get(name)).flatten();
                match cached {
                    Some(file) => file.0.respond(req.headers(), &file.1),
                    None => match dir.oneshot(req).await {
                        Ok(response) => response.map(axum::body::Body::new),
                        Err(never) => match never {},
                    },
                }
            }
        };
        Router::new()
            .nest_service(
                "/assets",
                tower::service_fn(move |req| {
                    let serve = serve.clone();
                    async move { Ok::<_, std::convert::Infallible>(serve(req).await) }
                }),
            )
            .layer(middleware::from_fn(cache_headers))
    }
}

/// Whether a file is worth compressing (text; images and fonts are compressed already).
fn compressible(mime: &str) -> bool {
    mime.starts_with("text/") || mime.contains("javascript") || mime.contains("json") || mime.contains("xml")
}

fn hash_dir(
    root: &Path,
    dir: &Path,
    out: &mut HashMap<String, String>,
    files: &mut HashMap<String, Arc<(Encoded, HeaderValue)>>,
) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => anyhow::bail!("reading assets directory {}: {err}", dir.display()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            hash_dir(root, &path, out, files)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let bytes = std::fs::read(&path)?;
            let digest = Sha256::digest(&bytes);
            let name = rel.to_string_lossy().replace('\\', "/");
            out.insert(name.clone(), hex::encode(&digest[..5]));
            let mime = mime_guess::from_path(&path).first_or_octet_stream();
            let text = compressible(mime.essence_str());
            let content_type = match (text, mime.get_param("charset")) {
                (true, None) => format!("{mime}; charset=utf-8"),
                _ => mime.to_string(),
            };
            let encoded = if text { Encoded::new(Bytes::from(bytes)) } else { Encoded::identity(Bytes::from(bytes)) };
            if let Ok(content_type) = HeaderValue::from_str(&content_type) {
                files.insert(name, Arc::new((encoded, content_type)));
            }
        }
    }
    Ok(())
}

async fn cache_headers(req: Request, next: Next) -> Response {
    let versioned = req.uri().query().is_some_and(|q| q.starts_with("v="));
    let mut response = next.run(req).await;
    if response.status().is_success() || response.status() == axum::http::StatusCode::NOT_MODIFIED {
        let value = if versioned { "public, max-age=31536000, immutable" } else { "public, max-age=300" };
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    }
    response
}
