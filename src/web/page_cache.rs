//! Bodies that do not change per request, kept rendered and compressed in memory.
//!
//! - [`Encoded`]: one body with its gzip and brotli variants (compressed once) and a strong
//!   ETag; [`Encoded::respond`] picks the variant the request's `Accept-Encoding` allows (the
//!   compression layer leaves responses with a `Content-Encoding` alone). The static assets
//!   ([`super::assets`]) and the cached pages use it.
//! - [`PageCache`]: public pages as anonymous visitors see them, by path, until what they show
//!   changes: each entry remembers the catalog snapshot it was rendered from (a catalog reload
//!   makes it stale), and [`PageCache::invalidate`] drops everything; it runs on every
//!   notification on [`CHANNEL`] (a run published, unpublished or hidden, a new arena
//!   snapshot), which every instance listens to ([`PageCache::spawn_listener`]). Entries also
//!   expire after [`MAX_AGE`], a bound on anything that changes without a notification. One
//!   request per path at a time renders a page for the cache ([`PageCache::lookup`]); while it
//!   does, the others get the expired copy (for at most [`MAX_STALE`] more) or, with none,
//!   render the page for themselves without the cache's costly compression. Without that,
//!   every request in flight when a busy page expired rendered and compressed it at once (p99
//!   stalls of 10–250 ms in `bench/run`). An invalidated page is never served: what it shows
//!   changed. Compression for the cache runs on the blocking pool, two at a time ([`encode`]).

use std::{
    collections::HashMap,
    io::Write,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use crate::db::PUBLIC_CHANGED as CHANNEL;
/// The longest a cached page is served.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// How long past [`MAX_AGE`] an expired page may still be served while one request renders it
/// again (should that request fail or decide not to cache, the next one tries).
pub const MAX_STALE: Duration = Duration::from_secs(30);
/// How long one request's claim to render an expired page again holds off the others.
const REFRESH_CLAIM: Duration = Duration::from_secs(5);
/// At most this many pages are kept (the comparison pages of a large catalog stay bounded).
const MAX_PAGES: usize = 512;
/// Brotli quality for bodies compressed once (the per-request layer uses the fastest level).
const BROTLI_QUALITY: u32 = 9;

/// A body and its compressed variants.
#[derive(Debug)]
pub struct Encoded {
    pub identity: Bytes,
    /// `None` when compressing does not make it smaller (images, fonts).
    pub gzip: Option<Bytes>,
    pub br: Option<Bytes>,
    pub etag: HeaderValue,
}

/// Which content codings a request accepts (`q=0` refuses one).
fn accepts(headers: &HeaderMap, coding: &str) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            (name.eq_ignore_ascii_case(coding) || name == "*") && !refused
        },
    )
}

impl Encoded {
    /// Compresses `body` once (brotli and gzip), keeping a variant only when it is smaller.
    pub fn new(body: Bytes) -> Encoded {
        let digest = Sha256::digest(&body);
        let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        let smaller = |bytes: Vec<u8>| (bytes.len() < body.len()).then(|| Bytes::from(bytes));
        let br = {
            let mut writer = brotli::CompressorWriter::new(Vec::new(), 4096, BROTLI_QUALITY, 22);
            writer.write_all(&body).ok().map(|()| writer.into_inner()).and_then(smaller)
        };
        let gzip = {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(&body).ok().and_then(|()| encoder.finish().ok()).and_then(smaller)
        };
        Encoded { identity: body, gzip, br, etag }
    }

    /// A body kept as it is (already compressed: images, fonts).
    pub fn identity(body: Bytes) -> Encoded {
        let digest = Sha256::digest(&body);
        let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Encoded { identity: body, gzip: None, br: None, etag }
    }

    /// The response for a request with `headers`: 304 when its `If-None-Match` names this body,
    /// else the smallest variant it accepts, with `Vary: Accept-Encoding` and the ETag.
    pub fn respond(&self, headers: &HeaderMap, content_type: &HeaderValue) -> Response {
        let mut response = Response::new(Body::empty());
        let h = response.headers_mut();
        h.insert(header::ETAG, self.etag.clone());
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        let matches = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim() == "*" || tag.trim().trim_start_matches("W/") == self.etag.to_str().unwrap_or(""));
        if matches {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        h.insert(header::CONTENT_TYPE, content_type.clone());
        let (body, coding) = match (&self.br, &self.gzip) {
            (Some(br), _) if accepts(headers, "br") => (br.clone(), Some("br")),
            (_, Some(gzip)) if accepts(headers, "gzip") => (gzip.clone(), Some("gzip")),
            _ => (self.identity.clone(), None),
        };
        if let Some(coding) = coding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        *response.body_mut() = Body::from(body);
        response
    }
}

/// What [`PageCache::lookup`] says to do.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Serve this page.
    Hit(Arc<Encoded>),
    /// Render the page and [`Claim::put`] it; dropping the claim unused passes it on.
    Render(Claim<'a>),
    /// Render the page for this request only: another request is rendering it for the cache.
    RenderUncached,
}

/// One request's right to render a page for the cache, taken by [`PageCache::lookup`]; ends
/// when dropped, kept or not (a redirect, an image still rendering, an error), so the next
/// request gets it.
pub struct Claim<'a> {
    cache: &'a PageCache,
    path: String,
    catalog_version: u64,
    /// Read before rendering: a page rendered across an invalidation is not kept.
    generation: u64,
}

impl Claim<'_> {
    /// Keeps `page` (unless the cache was invalidated since the claim was taken).
    pub fn put(self, page: Arc<Encoded>) {
        self.cache.keep(&self.path, self.catalog_version, self.generation, page);
    }
}

impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.cache.refreshing.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.path);
    }
}

/// Compresses a page for the cache ([`Encoded::new`]: brotli at quality 9, milliseconds of CPU
/// and a few MiB of window each) on the blocking pool, [`CONCURRENT_ENCODINGS`] at a time.
pub async fn encode(body: Bytes) -> anyhow::Result<Encoded> {
    static ENCODING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_ENCODINGS);
    let _permit = ENCODING.acquire().await?;
    Ok(tokio::task::spawn_blocking(move || Encoded::new(body)).await?)
}

/// Pages compressed for the cache at once (per process).
const CONCURRENT_ENCODINGS: usize = 2;

struct Entry {
    catalog_version: u64,
    generation: u64,
    at: Instant,
    page: Arc<Encoded>,
}

/// Rendered public pages by path (see the module comment).
#[derive(Default)]
pub struct PageCache {
    generation: AtomicU64,
    pages: RwLock<HashMap<String, Entry>>,
    /// Paths of expired pages one request is rendering again, since when.
    refreshing: std::sync::Mutex<HashMap<String, Instant>>,
}

impl PageCache {
    /// Bumped by every invalidation: a page rendered across one is not kept.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What to do for `path` (as rendered from catalog snapshot `catalog_version`): serve the
    /// cached page when it is fresh, or expired (by age only, within [`MAX_STALE`]) while
    /// another request renders it again; else render it, and cache it only when told
    /// [`Lookup::Render`]: one request per path at a time renders a page for the cache (and
    /// compresses it at brotli quality 9); the others in the meantime render it for themselves,
    /// as for a signed-in visitor.
    pub fn lookup(&self, path: &str, catalog_version: u64) -> Lookup<'_> {
        let generation = self.generation();
        let expired = {
            let pages = self.pages.read().unwrap_or_else(|p| p.into_inner());
            match pages.get(path) {
                Some(entry) if entry.catalog_version == catalog_version && entry.generation == generation => {
                    let age = entry.at.elapsed();
                    if age < MAX_AGE {
                        return Lookup::Hit(entry.page.clone());
                    }
                    (age < MAX_AGE + MAX_STALE).then(|| entry.page.clone())
                }
                _ => None,
            }
        };
        let mut refreshing = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        match (refreshing.get(path), expired) {
            (Some(since), Some(expired)) if since.elapsed() < REFRESH_CLAIM => Lookup::Hit(expired),
            (Some(since), None) if since.elapsed() < REFRESH_CLAIM => Lookup::RenderUncached,
            _ => {
                refreshing.insert(path.to_string(), Instant::now());
                Lookup::Render(Claim { cache: self, path: path.to_string(), catalog_version, generation })
            }
        }
    }

    /// Keeps `page` for `path` unless the cache was invalidated since `generation` was read.
    fn keep(&self, path: &str, catalog_version: u64, generation: u64, page: Arc<Encoded>) {
        let mut pages = self.pages.write().unwrap_or_else(|p| p.into_inner());
        if generation != self.generation() {
            return;
        }
        if pages.len() >= MAX_PAGES && !pages.contains_key(path) {
            pages.retain(|_, e| e.generation == generation && e.at.elapsed() < MAX_AGE);
            if pages.len() >= MAX_PAGES {
                return;
            }
        }
        pages.insert(path.to_string(), Entry { catalog_version, generation, at: Instant::now(), page });
    }

    /// Drops every cached page.
    pub fn invalidate(&self) {
        let mut pages = self.pages.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        pages.clear();
        drop(pages);
        self.refreshing.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Listens on [`CHANNEL`] and invalidates on every notification (and after every
    /// reconnect, when one may have been missed) until `shutdown`.
    pub fn spawn_listener(self: &Arc<Self>, pool: PgPool, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            crate::db::listen(&pool, CHANNEL, "page cache listener", &shutdown, |_| {
                cache.invalidate();
                std::future::ready(())
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(accept).expect("header"));
        h
    }

    #[test]
    fn variants_follow_accept_encoding() {
        let page = Encoded::new(Bytes::from("<p>hello hello hello hello hello hello</p>".repeat(50)));
        let html = HeaderValue::from_static("text/html; charset=utf-8");
        let br = page.respond(&headers("gzip, deflate, br"), &html);
        assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
        let gzip = page.respond(&headers("gzip"), &html);
        assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
        let refused = page.respond(&headers("br;q=0, gzip"), &html);
        assert_eq!(refused.headers()[header::CONTENT_ENCODING], "gzip");
        let plain = page.respond(&HeaderMap::new(), &html);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let mut conditional = HeaderMap::new();
        conditional.insert(header::IF_NONE_MATCH, page.etag.clone());
        assert_eq!(page.respond(&conditional, &html).status(), StatusCode::NOT_MODIFIED);
    }

    impl<'a> Lookup<'a> {
        fn page(self) -> Option<Arc<Encoded>> {
            match self {
                Lookup::Hit(page) => Some(page),
                Lookup::Render(_) | Lookup::RenderUncached => None,
            }
        }

        /// The claim to render the page for the cache; panics with `why` on any other answer.
        fn claim(self, why: &str) -> Claim<'a> {
            match self {
                Lookup::Render(claim) => claim,
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalidation_drops_pages_and_refuses_stale_renders() {
        let cache = PageCache::default();
        let page = Arc::new(Encoded::new(Bytes::from_static(b"x")));
        cache.keep("/a", 1, cache.generation(), page.clone());
        assert!(cache.lookup("/a", 1).page().is_some());
        let before = cache.lookup("/a", 2).claim("another catalog snapshot");
        cache.invalidate();
        assert!(cache.lookup("/a", 1).page().is_none(), "dropped by the invalidation");
        before.put(page);
        assert!(cache.lookup("/a", 2).page().is_none(), "rendered before the invalidation");
    }

    /// Puts `page` as if it had been rendered `age` ago.
    fn put_aged(cache: &PageCache, path: &str, page: Arc<Encoded>, age: Duration) {
        cache.keep(path, 1, cache.generation(), page);
        let mut pages = cache.pages.write().expect("lock");
        let entry = pages.get_mut(path).expect("kept");
        entry.at = Instant::now().checked_sub(age).expect("a monotonic clock this old");
    }

    #[test]
    fn one_request_at_a_time_renders_a_page_for_the_cache() {
        let cache = PageCache::default();
        let first = cache.lookup("/a", 1).claim("the first request renders it for the cache");
        for _ in 0..3 {
            assert!(matches!(cache.lookup("/a", 1), Lookup::RenderUncached), "the others meanwhile for themselves");
        }
        drop(first);
        let next = cache.lookup("/a", 1).claim("a dropped claim passes to the next request");
        let page = Arc::new(Encoded::new(Bytes::from_static(b"page")));
        next.put(page.clone());
        assert!(cache.lookup("/a", 1).page().is_some_and(|p| Arc::ptr_eq(&p, &page)));
        let _b = cache.lookup("/b", 1).claim("claims are per path");
    }

    #[test]
    fn an_expired_page_is_rendered_again_by_one_request_while_the_others_get_the_old_copy() {
        let cache = PageCache::default();
        let old = Arc::new(Encoded::new(Bytes::from_static(b"old")));
        put_aged(&cache, "/a", old.clone(), MAX_AGE + Duration::from_secs(1));
        let refresh = cache.lookup("/a", 1).claim("the first request after the expiry renders it");
        for _ in 0..3 {
            let served = cache.lookup("/a", 1).page().expect("the others are served meanwhile");
            assert!(Arc::ptr_eq(&served, &old));
        }
        let new = Arc::new(Encoded::new(Bytes::from_static(b"new")));
        refresh.put(new.clone());
        assert!(cache.lookup("/a", 1).page().is_some_and(|p| Arc::ptr_eq(&p, &new)));

        // Too old to serve even meanwhile, and never after an invalidation.
        put_aged(&cache, "/b", old.clone(), MAX_AGE + MAX_STALE);
        let _b = cache.lookup("/b", 1).claim("too old to serve");
        assert!(matches!(cache.lookup("/b", 1), Lookup::RenderUncached), "nobody gets a page past MAX_AGE + MAX_STALE");
        put_aged(&cache, "/c", old, MAX_AGE + Duration::from_secs(1));
        let _c = cache.lookup("/c", 1).claim("expired");
        cache.invalidate();
        assert!(cache.lookup("/c", 1).page().is_none(), "an invalidated page is not served meanwhile");
    }
}
