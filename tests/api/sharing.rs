//! Sharing a run: publish, the public page seen signed out (meta tags, card, images, ZIP),
//! unpublish then 404 everywhere (page, every image and thumbnail, card, ZIP, galleries), other
//! users refused, blind runs shareable only after the vote, reports (with their rate limit) on
//! the admin page and an administrator's hide, and the galleries of the comparison and model
//! pages listing only published, not hidden runs of that pair and use case. The 2- and 4-image
//! cards are written to `target/share-card-2.png` and `target/share-card-4.png` to look at.

use faceoff::accounts::{self, Role};
use reqwest::{StatusCode, multipart};
use uuid::Uuid;

use crate::{
    arena::{start_workers, vote},
    helpers::{Browser, Page, TestApp, location, wait_until_settled},
};

const PAIR: &str = "/compare/flux-2-vs-flux-ultra-1-1";

/// Submits a run from `browser`'s studio form and waits until every job is settled.
async fn run(app: &TestApp, browser: &Browser, models: &[&str], use_case: &str, prompt: &str, blind: bool) -> Uuid {
    let (_, studio) = browser.page("/studio").await;
    let csrf = studio.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf");
    let key = studio.attr("input[name=idempotency_key]", "value").expect("key");
    let mut form = multipart::Form::new()
        .text("csrf_token", csrf)
        .text("idempotency_key", key)
        .text("prompt", prompt.to_string())
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("use_case", use_case.to_string());
    if blind {
        form = form.text("blind", "on");
    }
    for m in models {
        form = form.text("models", m.to_string());
    }
    let response = browser.post_multipart("/runs", form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap_or_default());
    let run_id: Uuid = location(&response).strip_prefix("/runs/").and_then(|id| id.parse().ok()).expect("run id");
    wait_until_settled(&app.pool, run_id).await;
    run_id
}

/// Publishes through the run page's button; returns the share path (`/s/…`).
async fn publish(browser: &Browser, run_id: Uuid) -> String {
    let response = browser.submit(&format!("/runs/{run_id}"), &format!("/runs/{run_id}/publish"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap_or_default());
    let (_, page) = browser.page(&format!("/runs/{run_id}")).await;
    let link = page.attr("[data-testid=share-link]", "href").expect("share link on the run page");
    let path = link.split_once("/s/").map(|(_, id)| format!("/s/{id}")).expect("a /s/ link");
    assert!(link.starts_with("http"), "absolute: {link}");
    path
}

fn cache_control(response: &reqwest::Response) -> String {
    response.headers().get("cache-control").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn status(browser: &Browser, path: &str) -> StatusCode {
    browser.get(path).await.status()
}

fn meta(page: &Page, property: &str) -> String {
    page.attr(&format!("meta[property=\"{property}\"]"), "content")
        .or_else(|| page.attr(&format!("meta[name=\"{property}\"]"), "content"))
        .unwrap_or_else(|| panic!("no {property} meta tag"))
}

/// Fetches the card at `path`, checks it is a real 1200×630 PNG and writes it to `target/name`.
async fn check_card(browser: &Browser, path: &str, name: &str) {
    let response = browser.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(response.headers()["content-type"], "image/png");
    assert!(cache_control(&response).starts_with("public"), "{path}: {}", cache_control(&response));
    let bytes = response.bytes().await.expect("card bytes");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let card = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).expect("decodes");
    assert_eq!((card.width(), card.height()), (1200, 630));
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(name);
    std::fs::write(&out, &bytes).expect("write the card");
}

/// The entries (name, compression is stored, bytes) of a ZIP (read whole with async_zip's
/// in-memory reader; its replacement, `read1`, has no in-memory reader yet).
#[allow(deprecated)]
async fn unzip(bytes: Vec<u8>) -> Vec<(String, bool, Vec<u8>)> {
    let reader = async_zip::base::read::mem::ZipFileReader::new(bytes).await.expect("a valid ZIP");
    let mut out = Vec::new();
    for i in 0..reader.file().entries().len() {
        let entry = &reader.file().entries()[i];
        let name = entry.filename().as_str().expect("utf-8 name").to_string();
        let stored = entry.compression() == async_zip::Compression::Stored;
        let mut data = Vec::new();
        reader.reader_with_entry(i).await.expect("entry").read_to_end_checked(&mut data).await.expect("crc ok");
        out.push((name, stored, data));
    }
    out
}

#[tokio::test]
async fn a_published_run_is_public_until_unpublished_then_every_address_is_gone() {
    let app = TestApp::spawn().await;
    let _workers = start_workers(&app);
    let owner = app.signed_in_user(500).await;
    let prompt = "a lighthouse keeper's portrait at dusk";
    let run_id = run(&app, &app.browser, &["flux-2", "flux-ultra-1-1"], "portrait", prompt, false).await;
    let other_pair = run(&app, &app.browser, &["flux-2", "flux-2-max"], "portrait", "another pair", false).await;
    let other_use = run(&app, &app.browser, &["flux-2", "flux-ultra-1-1"], "landscape", "a valley", false).await;
    let unpublished = run(&app, &app.browser, &["flux-2", "flux-ultra-1-1"], "portrait", "kept private", false).await;

    // Private until published: the owner's run page is not cacheable, its ZIP is theirs only.
    let (status_code, page) = app.page(&format!("/runs/{run_id}")).await;
    assert_eq!(status_code, StatusCode::OK);
    assert!(page.count("[data-testid=publish]") == 1 && page.count("[data-testid=share-link]") == 0);
    assert!(cache_control(&app.get(&format!("/runs/{run_id}")).await).contains("no-store"));

    let share = publish(&app.browser, run_id).await;
    let token = app.browser.token("/studio", Some("/runs")).await;
    let twice = app.browser.post_raw(&format!("/runs/{run_id}/publish"), &[("csrf_token", &token)]).await;
    assert_eq!(twice.status(), StatusCode::SEE_OTHER, "a second click is harmless");
    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    assert!(page.attr("[data-testid=share-link]", "href").is_some_and(|l| l.ends_with(&share)), "same address");
    let share_id = share.trim_start_matches("/s/").to_string();
    assert!(share_id.len() >= 22 && !share_id.contains(&run_id.to_string()), "unguessable: {share_id}");
    let other_pair_share = publish(&app.browser, other_pair).await;
    let other_use_share = publish(&app.browser, other_use).await;

    // Signed out: the page, cacheable for a short while, with the prompt, the models' prices and
    // times, the try link and the social tags.
    let visitor = app.browser();
    let response = visitor.get(&share).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cache_control(&response), "public, max-age=60");
    let body = response.text().await.expect("body");
    assert!(!body.contains("/media/"), "no private media key on the public page");
    let page = Page::parse(&body);
    page.assert_well_formed("share page");
    assert_eq!(page.text("[data-testid=share-prompt]").as_deref(), Some(prompt));
    assert_eq!(page.texts("[data-testid=share-model]"), vec!["Flux 2", "Flux Ultra 1.1"]);
    assert_eq!(page.count("[data-testid=share-price]"), 2);
    assert_eq!(page.count("[data-testid=share-time]"), 2);
    assert_eq!(page.count("[data-testid=sandbox-badge]"), 2, "sandbox renderings are labelled");
    let try_href = page.attr("[data-testid=try-link]", "href").expect("try link");
    let decoded: String = url::form_urlencoded::parse(try_href.split_once('?').expect("query").1.as_bytes())
        .map(|(k, v)| format!("{k}={v}&"))
        .collect();
    assert!(decoded.contains("/studio?models=flux-2,flux-ultra-1-1") && decoded.contains("lighthouse"), "{decoded}");
    let base = app.state.config.public_url.as_str().trim_end_matches('/').to_string();
    assert_eq!(meta(&page, "og:image"), format!("{base}{share}/card.png"));
    assert_eq!(meta(&page, "og:url"), format!("{base}{share}"));
    assert_eq!(meta(&page, "og:image:width"), "1200");
    assert_eq!(meta(&page, "og:image:height"), "630");
    assert_eq!(meta(&page, "twitter:card"), "summary_large_image");
    assert!(meta(&page, "og:title").contains("Flux 2 vs Flux Ultra 1.1"));
    assert!(meta(&page, "og:description").contains("lighthouse"));
    let images = page.attrs("[data-testid=share-image] img", "src");
    assert_eq!(images, vec![format!("{share}/images/1"), format!("{share}/images/2")]);
    for path in images.iter().chain([&format!("{share}/thumbs/1"), &format!("{share}/thumbs/2")]) {
        let response = visitor.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(cache_control(&response), "public, max-age=300", "{path}");
    }
    assert_eq!(status(&visitor, &format!("{share}/images/3")).await, StatusCode::NOT_FOUND);
    check_card(&visitor, &format!("{share}/card.png"), "share-card-2.png").await;

    // The ZIP: the originals, stored, and prompt.txt.
    let response = visitor.get(&format!("{share}/download.zip")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert!(response.headers().get("content-encoding").is_none(), "not compressed again");
    let disposition = response.headers()["content-disposition"].to_str().unwrap_or_default().to_string();
    assert!(disposition.starts_with("attachment") && disposition.contains(&share_id), "{disposition}");
    assert!(!disposition.contains(&run_id.to_string()[..8]), "the public ZIP does not name the run");
    let entries = unzip(response.bytes().await.expect("zip").to_vec()).await;
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names[0].starts_with("01-flux-2.") && names[1].starts_with("02-flux-ultra-1-1."), "{names:?}");
    assert_eq!(names[2], "prompt.txt");
    assert!(entries.iter().all(|e| e.1), "every entry is STORED");
    let original = app.browser.get(&format!("{share}/images/1")).await.bytes().await.expect("original");
    assert_eq!(entries[0].2, original.to_vec(), "the original, byte for byte");
    let text = String::from_utf8(entries[2].2.clone()).expect("utf-8");
    for words in [prompt, "Aspect ratio: 1:1", "Use case: Portrait", "Flux Ultra 1.1", "sandbox"] {
        assert!(text.contains(words), "{words} in {text}");
    }
    // The owner's own ZIP is private; others get 404, visitors the log-in page.
    let owned = app.get(&format!("/runs/{run_id}/download.zip")).await;
    assert_eq!(owned.status(), StatusCode::OK);
    assert_eq!(cache_control(&owned), "private, no-store");
    assert_eq!(unzip(owned.bytes().await.expect("zip").to_vec()).await.len(), 3);
    assert_eq!(visitor.get(&format!("/runs/{run_id}/download.zip")).await.status(), StatusCode::SEE_OTHER);

    // Galleries: this pair and use case only, published runs only.
    let (_, page) = visitor.page(&format!("{PAIR}/portrait")).await;
    page.assert_well_formed("comparison page with a gallery");
    assert_eq!(page.attrs("[data-testid=gallery-entry]", "data-href"), vec![share.clone()]);
    assert_eq!(page.texts("[data-testid=gallery-prompt]"), vec![prompt]);
    assert_eq!(page.count("[data-testid=gallery-sandbox]"), 1);
    let (_, page) = visitor.page(PAIR).await;
    assert_eq!(page.count("[data-testid=gallery-entry]"), 2, "all use cases of the pair");
    let (_, page) = visitor.page(&format!("{PAIR}/landscape")).await;
    assert_eq!(page.texts("[data-testid=gallery-prompt]"), vec!["a valley"]);
    let (_, page) = visitor.page(&canonical(&visitor, "/compare/flux-2-vs-flux-2-max/portrait").await).await;
    assert_eq!(page.texts("[data-testid=gallery-prompt]"), vec!["another pair"]);
    let (_, page) = visitor.page("/models/flux-ultra-1-1").await;
    assert_eq!(page.count("[data-testid=model-published] img"), 2);
    let _ = unpublished;
    // The home page shows the newest shared runs, newest first, each with its images.
    let home_shared = |page: &Page| page.attrs("[data-testid=home-shared] [data-testid=gallery-entry]", "data-href");
    let (_, page) = visitor.page("/").await;
    page.assert_well_formed("/ with shared runs");
    assert_eq!(home_shared(&page), vec![other_use_share.clone(), other_pair_share.clone(), share.clone()]);
    assert_eq!(page.count("[data-testid=home-shared] img[width][height]"), 6);

    // Someone else can neither unpublish nor hide it.
    let mallory = app.create_user("mallory@example.com", 100).await;
    let intruder = app.browser();
    intruder.sign_in(&mallory).await;
    let token = intruder.token("/studio", Some("/runs")).await;
    let response = intruder.post_raw(&format!("/runs/{run_id}/unpublish"), &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = intruder.post_raw(&format!("/runs/{run_id}/publish"), &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = intruder.post_raw(&format!("/admin/shares/{share_id}/hide"), &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(status(&visitor, &share).await, StatusCode::OK);
    let (_, page) = intruder.page(&share).await;
    assert_eq!(page.count("[data-testid=report-form]"), 1, "signed-in users may report");
    assert!(cache_control(&intruder.get(&share).await).contains("no-store"), "signed in: private");

    // Unpublished: the page, every image, thumbnail, the card and the ZIP answer 404 at once.
    let response = app.browser.submit(&format!("/runs/{run_id}"), &format!("/runs/{run_id}/unpublish"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    for path in [
        share.clone(),
        format!("{share}/images/1"),
        format!("{share}/images/2"),
        format!("{share}/thumbs/1"),
        format!("{share}/thumbs/2"),
        format!("{share}/card.png"),
        format!("{share}/download.zip"),
    ] {
        assert_eq!(status(&visitor, &path).await, StatusCode::NOT_FOUND, "{path} after unpublishing");
    }
    let (_, page) = visitor.page(&format!("{PAIR}/portrait")).await;
    assert_eq!(page.count("[data-testid=gallery-entry]"), 0, "gone from the gallery");
    let (_, page) = visitor.page("/").await;
    assert_eq!(home_shared(&page), vec![other_use_share, other_pair_share], "gone from the home page");
    // Publishing again makes a new address; the old one stays dead.
    let again = publish(&app.browser, run_id).await;
    assert_ne!(again, share);
    assert_eq!(status(&visitor, &share).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&visitor, &again).await, StatusCode::OK);
    let publications: i64 = sqlx::query_scalar("SELECT count(*) FROM run_share WHERE user_id = $1 AND run_id = $2")
        .bind(owner.id)
        .bind(run_id)
        .fetch_one(&app.pool)
        .await
        .expect("shares");
    assert_eq!(publications, 2, "one row per publication");
}

/// The canonical address of a comparison page (the other order of a pair redirects).
async fn canonical(browser: &Browser, path: &str) -> String {
    let response = browser.get(path).await;
    if response.status() == StatusCode::MOVED_PERMANENTLY { location(&response) } else { path.to_string() }
}

#[tokio::test]
async fn four_images_blind_runs_reports_and_an_administrators_hide() {
    let app = TestApp::spawn().await;
    let _workers = start_workers(&app);
    let owner = app.signed_in_user(1000).await;
    let models = ["flux-2", "flux-ultra-1-1", "flux-2-max", "flux-1-1-pro"];
    let run_id = run(&app, &app.browser, &models, "portrait", "four models, one prompt: a red bicycle", false).await;
    let share = publish(&app.browser, run_id).await;
    let share_id = share.trim_start_matches("/s/").to_string();
    let visitor = app.browser();
    let (_, page) = visitor.page(&share).await;
    assert_eq!(page.count("[data-testid=share-image]"), 4);
    check_card(&visitor, &format!("{share}/card.png"), "share-card-4.png").await;
    let card_key: Option<String> = sqlx::query_scalar("SELECT card_key FROM run_share WHERE share_id = $1")
        .bind(&share_id)
        .fetch_one(&app.pool)
        .await
        .expect("card key");
    assert!(card_key.is_some(), "the card is stored once rendered");

    // A blind run is shareable only after the vote.
    let blind = run(&app, &app.browser, &["flux-2", "flux-ultra-1-1"], "portrait", "blind one", true).await;
    let (_, page) = app.page(&format!("/runs/{blind}")).await;
    assert_eq!(page.count("[data-testid=publish]"), 0);
    assert!(page.text("[data-testid=publish-note]").is_some_and(|t| t.contains("voted")));
    let token = app.browser.token("/studio", Some("/runs")).await;
    let refused = app.browser.post_raw(&format!("/runs/{blind}/publish"), &[("csrf_token", &token)]).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(app.browser.get(&format!("/runs/{blind}/download.zip")).await.status(), StatusCode::CONFLICT);
    assert_eq!(vote(&app.browser, blind, "A").await.status(), StatusCode::SEE_OTHER);
    let blind_share = publish(&app.browser, blind).await;
    let (_, page) = visitor.page(&blind_share).await;
    assert!(page.text("[data-testid=share-vote]").is_some_and(|t| t.contains("was the best")));

    // Reports: signed in, a reason, once per run, at most a few an hour.
    let reporter = app.create_user("reporter@example.com", 100).await;
    let browser = app.browser();
    browser.sign_in(&reporter).await;
    let short = browser.submit(&share, &format!("{share}/report"), &[("reason", "x")]).await;
    assert_eq!(short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let sent = browser.submit(&share, &format!("{share}/report"), &[("reason", "this is spam")]).await;
    assert_eq!(sent.status(), StatusCode::SEE_OTHER);
    let again = browser.submit(&share, &format!("{share}/report"), &[("reason", "still spam")]).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER, "a second report of the same run is taken as the first");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM run_report WHERE reporter_id = $1")
        .bind(reporter.id)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 1);
    // Four more reports this hour (of earlier publications of the blind run), then the limit.
    for i in 0..4 {
        let old = format!("oldpublication{i}aaaaaaaaaaaa");
        sqlx::query(
            "INSERT INTO run_share (share_id, run_id, user_id, sandbox, unpublished_at) VALUES ($1, $2, $3, true, now())",
        )
        .bind(&old)
        .bind(blind)
        .bind(owner.id)
        .execute(&app.pool)
        .await
        .expect("old publication");
        sqlx::query("INSERT INTO run_report (share_id, reporter_id, reason) VALUES ($1, $2, 'old report')")
            .bind(&old)
            .bind(reporter.id)
            .execute(&app.pool)
            .await
            .expect("old report");
    }
    let limited = browser.submit(&blind_share, &format!("{blind_share}/report"), &[("reason", "too many")]).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let token = visitor.token("/login", Some("/login")).await;
    let anonymous =
        visitor.post_raw(&format!("{share}/report"), &[("reason", "anonymous"), ("csrf_token", &token)]).await;
    assert!(location(&anonymous).starts_with("/login"), "visitors cannot report");

    // The admin page lists the report; a non-admin cannot hide; the admin's hide takes the run
    // down everywhere and keeps it from being published again.
    let admin_user = app.create_user("admin@example.com", 100).await;
    accounts::set_role(&app.pool, &admin_user.email, Role::Admin).await.expect("promote");
    let admin = app.browser();
    admin.sign_in(&admin_user).await;
    let (_, page) = admin.page("/admin").await;
    page.assert_well_formed("admin page with reports");
    assert!(page.attrs("[data-testid=report]", "data-share").contains(&share_id));
    assert!(page.texts("[data-testid=report-reason]").contains(&"this is spam".to_string()));
    let token = browser.token("/studio", Some("/runs")).await;
    let response = browser.post_raw(&format!("/admin/shares/{share_id}/hide"), &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let hidden = admin.submit("/admin", &format!("/admin/shares/{share_id}/hide"), &[("reason", "spam")]).await;
    assert_eq!(hidden.status(), StatusCode::SEE_OTHER);
    for path in [share.clone(), format!("{share}/images/1"), format!("{share}/card.png"), format!("{share}/thumbs/4")] {
        assert_eq!(status(&visitor, &path).await, StatusCode::NOT_FOUND, "{path} after hiding");
    }
    let (_, page) = visitor.page(&format!("{PAIR}/portrait")).await;
    assert_eq!(page.attrs("[data-testid=gallery-entry]", "data-href"), vec![blind_share.clone()], "hidden: gone");
    let (_, page) = admin.page("/admin").await;
    assert!(!page.attrs("[data-testid=report]", "data-share").contains(&share_id), "resolved");
    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    assert!(page.text("[data-testid=publish-note]").is_some_and(|t| t.contains("hid")));
    let token = app.browser.token("/studio", Some("/runs")).await;
    let refused = app.browser.post_raw(&format!("/runs/{run_id}/publish"), &[("csrf_token", &token)]).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);

    // The owner deletes the account: publications, the reports of them and the stored card go;
    // the export had them before.
    let export: serde_json::Value = app.get("/account/export").await.json().await.expect("export");
    assert_eq!(export["shared_runs"].as_array().map(Vec::len), Some(6), "{}", export["shared_runs"]);
    let done = app
        .browser
        .submit("/account/delete", "/account/delete", &[("password", crate::helpers::TEST_PASSWORD), ("confirm", "on")])
        .await;
    assert_eq!(location(&done), "/login?notice=account-deleted");
    assert_eq!(status(&visitor, &blind_share).await, StatusCode::NOT_FOUND);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM run_share WHERE user_id = $1) + (SELECT count(*) FROM run_report)
              + (SELECT count(*) FROM media_object WHERE key LIKE 'cards/run-%')",
    )
    .bind(owner.id)
    .fetch_one(&app.pool)
    .await
    .expect("left");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn comparison_pages_carry_a_card_of_their_showcase_images() {
    let app = TestApp::spawn().await;
    let path = format!("{PAIR}/portrait");
    // The showcase images are generated in the background on the first visit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let page = loop {
        let (_, page) = app.page(&path).await;
        if page.attr("meta[property=\"og:image:width\"]", "content").is_some() {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "the showcase images were not generated");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let base = app.state.config.public_url.as_str().trim_end_matches('/').to_string();
    assert_eq!(meta(&page, "og:image"), format!("{base}{path}/card.png"));
    assert_eq!(meta(&page, "og:image:width"), "1200");
    assert_eq!(meta(&page, "og:image:height"), "630");
    assert_eq!(meta(&page, "twitter:card"), "summary_large_image");
    check_card(&app.browser, &format!("{path}/card.png"), "compare-card.png").await;
    let reversed = app.get("/compare/flux-ultra-1-1-vs-flux-2/portrait/card.png").await;
    assert_eq!(reversed.status(), StatusCode::MOVED_PERMANENTLY);
}

#[tokio::test]
async fn the_gallery_pages_newest_first_with_a_cursor() {
    let app = TestApp::spawn().await;
    let _workers = start_workers(&app);
    app.signed_in_user(1000).await;
    let mut shares = Vec::new();
    for i in 0..7 {
        let run_id =
            run(&app, &app.browser, &["flux-2", "flux-ultra-1-1"], "portrait", &format!("prompt {i}"), false).await;
        shares.push(publish(&app.browser, run_id).await);
    }
    shares.reverse();
    let visitor = app.browser();
    let (_, first) = visitor.page(&format!("{PAIR}/portrait")).await;
    assert_eq!(first.attrs("[data-testid=gallery-entry]", "data-href"), shares[..6].to_vec(), "newest first, 6 a page");
    let next = first.attr("[data-testid=gallery-next]", "href").expect("a next page");
    let (status_code, second) = visitor.page(&next).await;
    assert_eq!(status_code, StatusCode::OK);
    second.assert_well_formed("second gallery page");
    assert_eq!(second.attrs("[data-testid=gallery-entry]", "data-href"), shares[6..].to_vec());
    assert_eq!(second.count("[data-testid=gallery-next]"), 0);
    let (status_code, _) = visitor.page(&format!("{PAIR}/portrait?cursor=not-a-cursor")).await;
    assert_eq!(status_code, StatusCode::BAD_REQUEST, "a cursor we did not give out");
}

/// Visitors' comparison pages come from the page cache (`web::page_cache`); publishing and
/// unpublishing announce the change, so a cached page shows the gallery as it is now.
#[tokio::test]
async fn the_cached_comparison_page_follows_publishing() {
    let app = TestApp::spawn().await;
    let _workers = start_workers(&app);
    // As `serve` runs it (the test app starts no background tasks).
    app.state.pages.spawn_listener(app.pool.clone(), app.state.shutdown.clone());
    app.signed_in_user(1000).await;
    let run_id = run(&app, &app.browser, &["flux-2", "flux-ultra-1-1"], "portrait", "a cached page", false).await;
    let page_path = format!("{PAIR}/portrait");
    let visitor = app.browser();
    // Until its showcase images are ready the page is not cached; wait for the cached copy.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let (status_code, page) = visitor.page(&page_path).await;
        assert_eq!(status_code, StatusCode::OK);
        if page.count(".showcase .showcase-pending") == 0
            && visitor.get(&page_path).await.headers().contains_key("etag")
        {
            assert_eq!(page.count("[data-testid=gallery-entry]"), 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the showcase images never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let gallery = |expected: usize, what: &'static str| {
        let visitor = &visitor;
        let page_path = &page_path;
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let (_, page) = visitor.page(page_path).await;
                if page.count("[data-testid=gallery-entry]") == expected {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "the cached page never showed {what}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let share = publish(&app.browser, run_id).await;
    gallery(1, "the published run").await;
    let (_, page) = visitor.page(&page_path).await;
    assert_eq!(page.attrs("[data-testid=gallery-entry]", "data-href"), vec![share]);
    let response = app.browser.submit(&format!("/runs/{run_id}"), &format!("/runs/{run_id}/unpublish"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    gallery(0, "the run gone after unpublishing").await;
}
