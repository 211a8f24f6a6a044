//! Static assets (`assets/`: CSS, JS, fonts, icons), served by the app itself with cache-busted
//! URLs: templates link `/assets/app.css?v=<content hash>`, and such URLs are cached for a year.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::Response,
};
use sha2::{Digest, Sha256};
use tower_http::services::ServeDir;

/// Content hashes of every file under the assets directory, computed once at start-up.
#[derive(Debug, Default)]
pub struct Assets {
    dir: PathBuf,
    hashes: HashMap<String, String>,
}

impl Assets {
    /// Finds the assets directory (`./assets`, else the one next to the crate's manifest) and
    /// hashes its files.
    pub fn load() -> anyhow::Result<Self> {
        let dir = crate::config::locate_dir("assets");
        let mut hashes = HashMap::new();
        hash_dir(&dir, &dir, &mut hashes)?;
        Ok(Assets { dir, hashes })
    }

    /// The cache-busted URL of an asset, e.g. `/assets/app.css?v=1a2b3c4d5e`.
    pub fn url(&self, name: &str) -> String {
        match self.hashes.get(name) {
            Some(hash) => format!("/assets/{name}?v={hash}"),
            None => format!("/assets/{name}"),
        }
    }

    /// The router serving `/assets/*`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .nest_service("/assets", ServeDir::new(&self.dir).precompressed_br().precompressed_gzip())
            .layer(middleware::from_fn(cache_headers))
    }
}

fn hash_dir(root: &Path, dir: &Path, out: &mut HashMap<String, String>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => anyhow::bail!("reading assets directory {}: {err}", dir.display()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            hash_dir(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let bytes = std::fs::read(&path)?;
            let digest = Sha256::digest(&bytes);
            let name = rel.to_string_lossy().replace('\\', "/");
            out.insert(name, hex::encode(&digest[..5]));
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
