//! What an attacker tries and what a careless client sends (issue 12): decompression bombs as
//! reference images, files left behind by refused runs, idempotency keys reused for another
//! request. Each test fails on the code before the fix.

use std::{io::Cursor, path::Path, time::Duration};

use base64::Engine;
use bytes::Bytes;
use faceoff::{accounts::api_keys, storage};
use reqwest::{StatusCode, multipart};
use serde_json::{Value, json};

use crate::helpers::{Browser, Page, TestApp, TestUser};

/// A PNG that declares `side`×`side` RGBA pixels, all zero: a few hundred KB, 256 MiB decoded
/// for 8192. The rows are really compressed (streamed), so a decoder that starts really works.
fn png_bomb(side: u32) -> Vec<u8> {
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let row = vec![0u8; 1 + side as usize * 4];
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..side {
        zlib.write_all(&row).expect("compress");
    }
    let idat = zlib.finish().expect("finish");
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 120]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).expect("jpeg");
    out.into_inner()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 7 % 251) as u8, (y * 13 % 241) as u8, 120]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

/// Every file under the app's media directory.
fn stored_files(app: &TestApp) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    let root = app.state.config.storage_url.trim_start_matches("file://").to_string();
    let mut out = Vec::new();
    walk(Path::new(&root), &mut out);
    out.retain(|f| f.contains("/runs/"));
    out
}

async fn api_key(app: &TestApp, user: &TestUser) -> String {
    api_keys::create(&app.pool, user.id, "hardening").await.expect("key")
}

async fn api_run(app: &TestApp, key: &str, body: &Value, idempotency_key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.browser.url("/api/v1/runs"))
        .bearer_auth(key)
        .header("Idempotency-Key", idempotency_key)
        .json(body)
        .send()
        .await
        .expect("POST /api/v1/runs")
}

fn run_body(prompt: &str, reference: Option<&[u8]>) -> Value {
    let mut body = json!({"prompt": prompt, "models": ["flux-2", "flux-2:klein-9b"], "mode": "2k"});
    if let Some(bytes) = reference {
        body["reference_image"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    body
}

async fn studio_submit(
    browser: &Browser,
    prompt: &str,
    key: Option<&str>,
    reference: Option<Vec<u8>>,
) -> reqwest::Response {
    let (_, page) = browser.page("/studio?models=flux-2,flux-2:klein-9b").await;
    let token = page.attr("input[name=csrf_token]", "value").expect("token");
    let key =
        key.map(str::to_string).unwrap_or_else(|| page.attr("input[name=idempotency_key]", "value").expect("key"));
    let mut form = multipart::Form::new()
        .text("csrf_token", token)
        .text("idempotency_key", key)
        .text("prompt", prompt.to_string())
        .text("models", "flux-2")
        .text("models", "flux-2:klein-9b")
        .text("mode", "2k")
        .text("aspect_ratio", "1:1");
    if let Some(bytes) = reference {
        form = form.part("reference_image", multipart::Part::bytes(bytes).file_name("reference.png"));
    }
    browser.post_multipart("/runs", form).await
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_from_its_header_at_once() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(1000).await;
    let key = api_key(&app, &user).await;
    let bomb = png_bomb(8192);
    assert!(bomb.len() < 2 * 1024 * 1024, "a small file: {} bytes", bomb.len());

    let response = api_run(&app, &key, &run_body("the same room at night", Some(&bomb)), "bomb-1").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_input");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("reference_image") && message.contains("8192×8192"), "{message}");

    // The studio form says the same at the field.
    let response = studio_submit(&app.browser, "the same room at night", None, Some(bomb)).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = Page::parse(&response.text().await.expect("page"));
    assert!(page.source.contains("8192×8192"), "the field names the size");
    // The message names the declared size: the header refused it (a decode would have
    // allocated 256 MiB first; bench/bomb measures the memory).
    assert!(stored_files(&app).is_empty());
}

#[tokio::test]
async fn a_reference_image_is_decoded_only_after_the_credit_check() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(0).await;
    let key = api_key(&app, &user).await;
    // A valid header on a body that breaks when decoded: decoding first would answer 422.
    let image = png(640, 480);
    let broken = &image[..image.len() * 3 / 4];
    assert!(
        image::ImageReader::new(Cursor::new(broken)).with_guessed_format().expect("format").into_dimensions().is_ok()
    );
    assert!(image::load_from_memory(broken).is_err(), "the body is broken");
    let response = api_run(&app, &key, &run_body("a quiet harbour", Some(broken)), "order-1").await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "credits are checked before decoding: {body}");
    assert_eq!(body["error"]["code"], "insufficient_credits");
}

#[tokio::test]
async fn a_refused_run_stores_nothing_and_orphans_are_swept() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(10).await;
    let response = studio_submit(&app.browser, "a red kite over the dunes", None, Some(jpeg(320, 240))).await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let key = api_key(&app, &user).await;
    let response = api_run(&app, &key, &run_body("a red kite over the dunes", Some(&jpeg(320, 240))), "poor-1").await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(stored_files(&app).is_empty(), "refused runs left {:?}", stored_files(&app));

    // Bytes whose transaction never committed (no row owns them) are swept after the grace
    // period; owned ones stay.
    let store = &app.state.store;
    store.put("runs/orphan/reference.jpg", Bytes::from_static(b"orphan")).await.expect("put");
    storage::save(
        &app.pool,
        store,
        "runs/owned/reference.jpg",
        Bytes::from_static(b"kept"),
        "image/jpeg",
        None,
        Some(user.id),
    )
    .await
    .expect("save");
    assert_eq!(storage::sweep_orphans(&app.pool, store, storage::ORPHAN_GRACE).await.expect("sweep"), 0, "too young");
    assert_eq!(storage::sweep_orphans(&app.pool, store, Duration::ZERO).await.expect("sweep"), 1);
    assert!(store.get("runs/orphan/reference.jpg").await.expect("get").is_none());
    assert!(store.get("runs/owned/reference.jpg").await.expect("get").is_some());
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(1000).await;
    let key = api_key(&app, &user).await;
    let first = api_run(&app, &key, &run_body("a lighthouse at dusk", None), "same-key").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let again = api_run(&app, &key, &run_body("a lighthouse at dusk", None), "same-key").await;
    assert_eq!(again.status(), StatusCode::OK, "the same request replays");
    assert_eq!(again.json::<Value>().await.expect("json")["id"], first["id"]);
    let other = api_run(&app, &key, &run_body("a lighthouse at dawn", None), "same-key").await;
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let body: Value = other.json().await.expect("json");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("\"same-key\""), "{body}");
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generation_run").fetch_one(&app.pool).await.expect("count");
    assert_eq!(runs, 1);

    // The studio: the form sent again after its choices changed.
    let response = studio_submit(&app.browser, "a harbour in fog", Some("form-key"), None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = studio_submit(&app.browser, "a harbour in fog", Some("form-key"), None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "a double submit lands on the same run");
    let response = studio_submit(&app.browser, "a harbour at noon", Some("form-key"), None).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let page = Page::parse(&response.text().await.expect("page"));
    assert!(page.text("[data-testid=form-error]").unwrap_or_default().contains("already submitted"));
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generation_run").fetch_one(&app.pool).await.expect("count");
    assert_eq!(runs, 2);
    app.assert_invariants().await;
}

async fn admin_browser(app: &TestApp) -> Browser {
    let admin = app.create_user("root@example.com", 0).await;
    faceoff::accounts::set_role(&app.pool, &admin.email, faceoff::accounts::Role::Admin).await.expect("promote");
    let browser = app.browser();
    browser.sign_in(&admin).await;
    browser
}

async fn available(app: &TestApp, user: &TestUser) -> i64 {
    faceoff::ledger::balance(&app.pool, user.id).await.expect("balance").available
}

#[tokio::test]
async fn admin_adjustments_refuse_an_overflowing_amount_and_a_damaged_key() {
    let app = TestApp::spawn().await;
    let user = app.create_user("customer@example.com", 10).await;
    let admin = admin_browser(&app).await;
    let page = "/admin?email=customer%40example.com";
    let adjust = |amount: &str, key: Option<String>| {
        let admin = &admin;
        let amount = amount.to_string();
        async move {
            let (_, form) = admin.page(page).await;
            let token = form.attr("form[action=\"/admin/adjust\"] input[name=csrf_token]", "value").expect("token");
            let key = key.unwrap_or_else(|| form.attr("input[name=idempotency_key]", "value").expect("key"));
            admin
                .post_raw(
                    "/admin/adjust",
                    &[
                        ("csrf_token", &token),
                        ("email", "customer@example.com"),
                        ("amount", &amount),
                        ("reason", "support"),
                        ("idempotency_key", &key),
                    ],
                )
                .await
        }
    };
    let response = adjust("-9223372036854775808", None).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await.expect("page").contains("whole number of credits"));

    // A key that is too long is refused, not silently replaced: a double submit would add twice.
    let long = "k".repeat(101);
    for _ in 0..2 {
        let response = adjust("50", Some(long.clone())).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = Page::parse(&response.text().await.expect("page"));
        assert!(page.text("[data-testid=adjust-error]").unwrap_or_default().contains("reload the page"));
    }
    assert_eq!(available(&app, &user).await, 10);
    // The same form sent twice adds once.
    for _ in 0..2 {
        assert_eq!(adjust("50", Some("adjust-once".into())).await.status(), StatusCode::OK);
    }
    assert_eq!(available(&app, &user).await, 60);
    app.assert_invariants().await;
}

async fn api_status(app: &TestApp, key: &str) -> StatusCode {
    reqwest::Client::new().get(app.browser.url("/api/v1/me")).bearer_auth(key).send().await.expect("GET").status()
}

async fn create_key_with(browser: &Browser, password: &str) -> reqwest::Response {
    browser
        .submit(
            "/account/api-keys",
            "/account/api-keys",
            &[("action", "create"), ("name", "deploy"), ("password", password)],
        )
        .await
}

#[tokio::test]
async fn api_keys_need_the_password_and_end_with_the_sessions_when_asked() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;
    // A stolen session cannot mint a key without the password.
    for password in ["", "not my password"] {
        let response = create_key_with(&app.browser, password).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_key").fetch_one(&app.pool).await.expect("count");
    assert_eq!(keys, 0);
    let created = |response: reqwest::Response| async move {
        assert_eq!(response.status(), StatusCode::OK);
        Page::parse(&response.text().await.expect("page")).text("[data-testid=new-api-key]").expect("key")
    };
    let first = created(create_key_with(&app.browser, &user.password).await).await;
    assert_eq!(api_status(&app, &first).await, StatusCode::OK);

    // The password change offers to revoke the keys, ticked by default.
    let (_, page) = app.browser.page("/account").await;
    assert!(page.count("form[action=\"/account/password\"] input[name=revoke_keys][checked]") == 1);
    assert!(page.count("form[action=\"/account/sign-out-everywhere\"] input[name=revoke_keys][checked]") == 1);
    let response = app
        .browser
        .submit(
            "/account",
            "/account/password",
            &[("current_password", &user.password), ("new_password", "a new password entirely"), ("revoke_keys", "on")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api_status(&app, &first).await, StatusCode::UNAUTHORIZED, "revoked with the password change");

    // "Sign out everywhere" without the box ticked keeps the keys; with it, revokes them.
    let second = created(create_key_with(&app.browser, "a new password entirely").await).await;
    let response = app.browser.submit("/account", "/account/sign-out-everywhere", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(api_status(&app, &second).await, StatusCode::OK, "unticked: the key stays");
    let user = TestUser { password: "a new password entirely".into(), ..user };
    app.browser.sign_in(&user).await;
    let response = app.browser.submit("/account", "/account/sign-out-everywhere", &[("revoke_keys", "on")]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(api_status(&app, &second).await, StatusCode::UNAUTHORIZED);
    // The key list says when each key was last used.
    app.browser.sign_in(&user).await;
    let (_, page) = app.browser.page("/account/api-keys").await;
    assert!(page.source.contains("Last used") && page.source.contains("UTC"));
}

#[tokio::test]
async fn visitors_get_no_session_and_sessions_move_their_expiry_with_use() {
    let app = TestApp::spawn().await;
    let visitor = app.browser();
    for path in ["/login", "/signup", "/", "/compare/flux-2-vs-flux-ultra-1-1"] {
        let (status, _) = visitor.page(path).await;
        assert_eq!(status, StatusCode::OK);
    }
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM session").fetch_one(&app.pool).await.expect("count");
    assert_eq!(sessions, 0, "page views by visitors store no session");
    assert!(visitor.cookie("faceoff_session").is_none());
    assert!(visitor.cookie("faceoff_csrf").is_some(), "forms still get their token");

    // A signed-in session whose expiry was last moved long ago (and ends tomorrow) is extended
    // by its next use to 14 days from now.
    let user = app.signed_in_user(0).await;
    let id = app.browser.cookie("faceoff_session").expect("session");
    sqlx::query(
        "UPDATE session SET expiry_date = now() + interval '1 day',
                data = jsonb_set(data, '{refreshed_day}', '1') WHERE id = $1",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .expect("age the session");
    let (status, _) = app.browser.page("/account").await;
    assert_eq!(status, StatusCode::OK);
    let left: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM expiry_date - now())::float8 FROM session WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("expiry");
    assert!(left > 13.0 * 86_400.0, "{left} s left: the expiry did not move with the activity");
    let _ = user;
}

#[tokio::test]
async fn private_pages_are_not_stored_by_caches() {
    let app = TestApp::spawn().await;
    let (status, _) = app.browser().page("/compare/flux-2-vs-flux-ultra-1-1").await;
    assert_eq!(status, StatusCode::OK);
    app.signed_in_user(100).await;
    for path in ["/credits", "/account", "/account/api-keys", "/runs", "/studio", "/", "/no-such-page"] {
        let response = app.get(path).await;
        let cache = response.headers().get("cache-control").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(cache.contains("no-store"), "{path}: Cache-Control {cache:?}");
    }
    // A visitor's public page stays cacheable (no no-store).
    let response = app.browser().get("/compare/flux-2-vs-flux-ultra-1-1").await;
    let cache = response.headers().get("cache-control").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(!cache.contains("no-store"), "{cache:?}");
}

#[tokio::test]
async fn a_live_stream_ends_with_its_session() {
    let app = TestApp::spawn_with(|c| c.live_refresh = Duration::from_millis(200)).await;
    let user = app.signed_in_user(100).await;
    let catalog = app.state.catalog.current();
    let input = faceoff::runs::create::RunInput {
        prompt: "a quiet street".into(),
        models: vec!["flux-2".into(), "flux-ultra-1-1".into()],
        ..Default::default()
    };
    let valid = faceoff::runs::create::validate(&catalog, &input, None).expect("valid");
    let run = faceoff::runs::create::create_run(
        &app.pool,
        &app.state.store,
        &app.state.config.queue,
        user.id,
        &valid,
        "live-session",
    )
    .await
    .expect("run");
    let mut events = app.get(&format!("/runs/{}/events", run.run_id)).await;
    let first = tokio::time::timeout(Duration::from_secs(10), events.chunk()).await.expect("first event");
    assert!(String::from_utf8_lossy(&first.expect("stream").expect("chunk")).contains("event: run"));
    // Signed out everywhere from another browser: the stream ends, without a final event.
    let other = app.browser();
    other.sign_in(&user).await;
    assert_eq!(other.submit("/account", "/account/sign-out-everywhere", &[]).await.status(), StatusCode::SEE_OTHER);
    let mut rest = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(chunk)) =
        tokio::time::timeout_at(deadline, events.chunk()).await.expect("the stream ended in time")
    {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!rest.contains("event: done"), "the run did not finish: the stream ended with the session: {rest}");
}

#[tokio::test]
async fn look_alike_emails_are_refused_at_sign_up() {
    let app = TestApp::spawn().await;
    for email in ["ann\u{200B}@example.com", "ann@exa\u{202E}elpm.com", "\u{FEFF}ann@example.com"] {
        let response = app.browser().sign_up(email, "a long enough password").await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{email:?}");
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM app_user").fetch_one(&app.pool).await.expect("count");
    assert_eq!(users, 0);
}

#[tokio::test]
async fn api_error_codes_are_the_documented_ones() {
    let app = TestApp::spawn().await;
    let user = app.create_user("api@example.com", 100).await;
    let key = api_key(&app, &user).await;
    let post = |body: &'static str, content_type: &'static str| {
        let key = key.clone();
        let url = app.browser.url("/api/v1/quote");
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("POST");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
        }
    };
    assert_eq!(post("{not json", "application/json").await, (StatusCode::BAD_REQUEST, "bad_request".into()));
    assert_eq!(
        post("{\"models\": [\"a\\u0000\"]}", "application/json").await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        post("{\"mode\": \"2k\"}", "application/json").await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input".into())
    );
    assert_eq!(
        post("{\"models\": 5}", "application/json").await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input".into())
    );
    assert_eq!(
        post("models=flux-2", "application/x-www-form-urlencoded").await,
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type".into())
    );
}
