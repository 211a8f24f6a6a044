//! Issue 18, per request: visitors' comparison pages from the page cache (until something
//! public changes), static assets compressed once in memory.

use std::{io::Read, time::Duration};

use reqwest::StatusCode;

use crate::helpers::TestApp;

const SEED: &str = "/compare/flux-2-vs-flux-ultra-1-1/portrait";

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut request = client.get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("GET")
}

#[tokio::test]
async fn assets_are_served_compressed_once_with_an_etag() {
    let app = TestApp::spawn().await;
    let plain = get_with(&app, "/assets/app.css", &[]).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().get("content-encoding").is_none());
    let etag = plain.headers()["etag"].clone();
    let css = plain.bytes().await.expect("body");

    let br = get_with(&app, "/assets/app.css?v=1", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(br.headers()["content-encoding"], "br");
    assert_eq!(br.headers()["etag"], etag);
    assert!(br.headers()["content-type"].to_str().expect("ascii").starts_with("text/css"));
    assert_eq!(br.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(br.bytes().await.expect("body").len() < css.len() / 2);

    let gzip = get_with(&app, "/assets/app.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gzip.bytes().await.expect("body")[..]).read_to_end(&mut unzipped).expect("gunzip");
    assert_eq!(unzipped, css);

    let again = get_with(&app, "/assets/app.css", &[("if-none-match", etag.to_str().expect("ascii"))]).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(get_with(&app, "/assets/nope.css", &[]).await.status(), StatusCode::NOT_FOUND);
}

/// The comparison page once its showcase images are ready.
async fn settled_page(app: &TestApp) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (status, page) = app.page(SEED).await;
        assert_eq!(status, StatusCode::OK);
        if page.count(".showcase .showcase-pending") == 0 {
            return page.source;
        }
        assert!(tokio::time::Instant::now() < deadline, "the showcase images never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn visitors_get_the_cached_page_until_something_public_changes() {
    let app = TestApp::spawn_with(|c| c.arena.min_votes = 1).await;
    // As `serve` runs it (the test app starts no background tasks).
    app.state.pages.spawn_listener(app.pool.clone(), app.state.shutdown.clone());
    let first = settled_page(&app).await;
    assert!(!first.contains("data-testid=\"community\""));

    // Cached: the same body (and its brotli variant) with one ETag.
    let a = get_with(&app, SEED, &[("accept-encoding", "br")]).await;
    assert_eq!(a.headers().get("content-encoding").map(|v| v.to_str().unwrap_or("")), Some("br"), "{:?}", a.headers());
    let b = get_with(&app, SEED, &[]).await;
    assert_eq!(a.headers()["etag"], b.headers()["etag"]);
    assert_eq!(b.text().await.expect("html"), first);

    // A new arena snapshot written behind the app's back is not seen by the cached page...
    let snapshot: i64 = sqlx::query_scalar(
        "INSERT INTO arena_snapshot (board, last_vote_id, counted_votes, excluded_votes, bootstrap)
         VALUES ('portrait', 1, 12, 0, 0) RETURNING snapshot_id",
    )
    .fetch_one(&app.pool)
    .await
    .expect("snapshot");
    sqlx::query(
        "INSERT INTO arena_snapshot_pair (snapshot_id, entry_a, entry_b, votes, score_a)
         VALUES ($1, 'flux-2:standard', 'flux-ultra-1-1:standard', 12, 0.25)",
    )
    .bind(snapshot)
    .execute(&app.pool)
    .await
    .expect("pair");
    let (_, cached) = app.page(SEED).await;
    assert_eq!(cached.source, first, "served from the cache");

    // ...until it is announced: every instance drops its cached pages.
    sqlx::query("SELECT pg_notify('faceoff_public_changed', '')").execute(&app.pool).await.expect("notify");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = app.page(SEED).await;
        if let Some(sentence) = page.text("[data-testid=community]") {
            assert!(sentence.starts_with("In 12 blind portrait votes, Flux Ultra 1.1 won 75%"), "{sentence}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page never changed after the notification");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Signed-in visitors never get the visitors' copy.
    app.signed_in_user(100).await;
    let (_, own) = app.page(SEED).await;
    assert!(own.text("[data-testid=balance]").is_some());
}
