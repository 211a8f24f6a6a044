//! Issue 13: catalog routes through real adapters (wiremock stands in for OpenAI and fal, which
//! this machine cannot reach), fall-through charged once, usage billing below the hold, the
//! sandbox as every model's offline default, retired models, makers on /models, and the
//! providers check.

use std::time::Duration;

use base64::Engine;
use faceoff::{
    config::Secret,
    jobs::{self, WorkerOptions},
    ledger,
    providers::check::{CheckStatus, check_all},
};
use reqwest::{StatusCode, multipart};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{TestApp, location, settled_within, test_config};

struct Workers(CancellationToken);

impl Drop for Workers {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn start_workers(app: &TestApp) -> Workers {
    let token = CancellationToken::new();
    let options = WorkerOptions {
        workers: 2,
        lease: Duration::from_secs(30),
        idle_poll: Duration::from_millis(100),
        per_provider: 24,
        max_transient: 3,
        running_limits: faceoff::jobs::RunningLimits::NONE,
    };
    jobs::spawn_workers(app.pool.clone(), app.state.store.clone(), app.state.providers.clone(), options, token.clone());
    Workers(token)
}

/// Submits the studio form for `models` (1:1, 2k); returns the run id.
async fn run(app: &TestApp, models: &[&str]) -> Uuid {
    let (status, page) = app.page(&format!("/studio?models={}", models.join(","))).await;
    assert_eq!(status, StatusCode::OK);
    let form = multipart::Form::new()
        .text("csrf_token", page.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf"))
        .text("idempotency_key", page.attr("input[name=idempotency_key]", "value").expect("key"))
        .text("prompt", "a jazz poster that says BLUE NOTES")
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("seed", "");
    let form = models.iter().fold(form, |f, m| f.text("models", m.to_string()));
    let response = app.browser.post_multipart("/runs", form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap_or_default());
    location(&response).strip_prefix("/runs/").and_then(|id| id.parse().ok()).expect("run id")
}

fn png_b64() -> String {
    let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 100]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("png");
    base64::engine::general_purpose::STANDARD.encode(out.into_inner())
}

fn base(server: &MockServer) -> Url {
    Url::parse(&format!("{}/", server.uri())).expect("url")
}

/// A fal queue that accepts, completes and serves one image.
async fn fal_mock() -> MockServer {
    let server = MockServer::start().await;
    let uri = server.uri();
    Mock::given(method("POST"))
        .and(path("/openai/gpt-image-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "request_id": "req-9",
            "status_url": format!("{uri}/openai/gpt-image-2/requests/req-9/status"),
            "response_url": format!("{uri}/openai/gpt-image-2/requests/req-9"),
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/openai/gpt-image-2/requests/req-9/status"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "COMPLETED"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/openai/gpt-image-2/requests/req-9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "images": [{"url": format!("{uri}/files/out.png")}], "has_nsfw_concepts": [false]})))
        .mount(&server)
        .await;
    let png = base64::engine::general_purpose::STANDARD.decode(png_b64()).expect("png");
    Mock::given(method("GET"))
        .and(path("/files/out.png"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(png))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn the_first_route_fails_the_second_delivers_and_the_job_is_charged_once() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": {"message": "overloaded",
            "type": "server_error", "param": null, "code": null}})))
        .mount(&openai)
        .await;
    let fal = fal_mock().await;
    let (openai_url, fal_url) = (base(&openai), base(&fal));
    let app = TestApp::spawn_with(move |c| {
        c.openai_api_key = Some(Secret::new("sk-test"));
        c.openai_api_url = openai_url;
        c.fal_key = Some(Secret::new("fal-test"));
        c.fal_queue_url = fal_url.clone();
        c.fal_api_url = fal_url;
    })
    .await;
    let user = app.signed_in_user(1000).await;
    // With a sandboxed BFL model beside it (no BFL key).
    let run_id = run(&app, &["gpt-image-2", "flux-1-1-pro"]).await;
    let _workers = start_workers(&app);
    let jobs = settled_within(&app.pool, run_id, Duration::from_secs(60)).await;
    let job = &jobs[0];
    assert_eq!(jobs[1].route.as_deref(), Some("sandbox:flux-pro-1.1"));
    assert_eq!(job.status(), jobs::JobStatus::Delivered, "{job:?}");
    assert_eq!(job.route.as_deref(), Some("fal:openai/gpt-image-2"));
    // fal reports no token usage: the job pays its hold, once.
    assert_eq!(job.charged, Some(150));
    assert_eq!(
        ledger::balance(&app.pool, user.id).await.expect("balance"),
        ledger::Balance { available: 840, held: 0 }
    );
    let history = ledger::history(&app.pool, user.id, 50, 0).await.expect("history");
    let lines: Vec<_> = history.iter().filter(|l| l.job_id == Some(job.job_id)).collect();
    assert_eq!(lines.len(), 1, "one hold, posted once: {history:?}");
    assert_eq!((lines[0].kind, lines[0].hold_status), (ledger::Kind::Hold, Some(ledger::HoldStatus::Posted)));
    // The first route was tried (1 + 2 retries before falling through), the second once.
    assert_eq!(openai.received_requests().await.expect("requests").len(), 3);
    let fal_posts =
        fal.received_requests().await.expect("requests").iter().filter(|r| r.method.as_str() == "POST").count();
    assert_eq!(fal_posts, 1);

    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    page.assert_well_formed("run page");
    assert_eq!(page.text("[data-testid=route]").as_deref(), Some("Made via fal · openai/gpt-image-2."));
    let (_, history) = app.page("/runs").await;
    assert_eq!(history.text("[data-testid=route]").as_deref(), Some("(via fal · openai/gpt-image-2)"));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_token_billed_job_is_charged_its_reported_usage_and_the_rest_of_the_hold_returns() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "created": 1, "data": [{"b64_json": png_b64()}],
            "usage": {"input_tokens": 50, "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
                      "output_tokens": 7024, "total_tokens": 7074}})))
        .expect(1)
        .mount(&openai)
        .await;
    let url = base(&openai);
    let app = TestApp::spawn_with(move |c| {
        c.openai_api_key = Some(Secret::new("sk-test"));
        c.openai_api_url = url;
    })
    .await;
    let user = app.signed_in_user(1000).await;
    let run_id = run(&app, &["gpt-image-2", "flux-1-1-pro"]).await;
    assert_eq!(
        ledger::balance(&app.pool, user.id).await.expect("balance").held,
        160,
        "the hold is the most it can cost"
    );
    let _workers = start_workers(&app);
    let job = settled_within(&app.pool, run_id, Duration::from_secs(60)).await.remove(0);
    assert_eq!((job.status(), job.route.as_deref()), (jobs::JobStatus::Delivered, Some("openai:gpt-image-2")));
    // $0.21097 reported × 100 × 2.5 = 52.7 → 53 credits; 97 of the 150 held return.
    assert_eq!(job.charged, Some(53));
    assert_eq!(
        ledger::balance(&app.pool, user.id).await.expect("balance"),
        ledger::Balance { available: 937, held: 0 }
    );
    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    let detail = page.text("[data-role=detail]").expect("detail");
    assert!(detail.contains("Charged 53 credits (billed by usage; 97 of 150 held returned)."), "{detail}");
    app.assert_invariants().await;
}

#[tokio::test]
async fn without_keys_every_maker_runs_in_the_sandbox_and_records_that_route() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(1000).await;
    let _workers = start_workers(&app);
    for pair in [["nano-banana-2", "ideogram-3"], ["qwen-image", "recraft-v3"]] {
        for job in settled_within(&app.pool, run(&app, &pair).await, Duration::from_secs(60)).await {
            let model = &job.model_slug;
            assert_eq!(job.status(), jobs::JobStatus::Delivered, "{model}");
            let route = job.route.clone().expect("route");
            assert!(route.starts_with("sandbox:"), "{model}: {route}");
            // The sandbox reports no usage: a usage-billed model pays its hold.
            assert_eq!(job.charged, Some(job.price), "{model}");
        }
    }
    assert_eq!(ledger::balance(&app.pool, user.id).await.expect("balance").held, 0);
}

#[tokio::test]
async fn a_retired_model_keeps_its_page_but_leaves_the_studio_and_the_api() {
    let app = TestApp::spawn().await;
    let _user = app.signed_in_user(1000).await;
    let (status, page) = app.page("/models/gpt-image-1").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("retired model page");
    let notice = page.text("[data-testid=lifecycle-notice]").expect("notice");
    assert!(notice.starts_with("Retired.") && notice.contains("GPT Image 2"), "{notice}");
    assert!(page.attrs("[data-testid=lifecycle-notice] a", "href").contains(&"/models/gpt-image-2".to_string()));
    assert_eq!(page.count("a[href^=\"/studio?models=gpt-image-1\"]"), 0);

    let (_, studio) = app.page("/studio").await;
    let values = studio.attrs("input[name=models]", "value");
    assert!(values.contains(&"gpt-image-2".to_string()) && !values.contains(&"gpt-image-1".to_string()));
    let (_, retiring) = app.page("/models/gpt-image-1-5").await;
    assert!(retiring.text("[data-testid=lifecycle-notice]").is_some_and(|n| n.starts_with("Retiring.")));

    let (status, page) = app.page("/studio?models=gpt-image-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.count("input[name=models][value=gpt-image-1]"), 0);

    // Its comparison pages stay, say so, and send the studio to the successor.
    let (status, page) = app.page("/compare/gpt-image-2-vs-gpt-image-1/typography").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("comparison with a retired model");
    let notice = page.text("[data-testid=lifecycle-notice]").expect("notice");
    assert_eq!(notice, "GPT Image 1 was retired by its maker; the studio runs GPT Image 2 in its place.");
    assert!(page.attrs(".actions a.button", "href").iter().all(|h| !h.contains("gpt-image-1")));

    // The API's model list: offered models only, with maker, lifecycle and billing.
    let catalog = app.state.catalog.current();
    let offered: Vec<&str> = catalog.offered_models().map(|m| m.slug.as_str()).collect();
    assert!(offered.len() >= 16, "{offered:?}");
    assert!(!offered.contains(&"gpt-image-1") && !offered.contains(&"nano-banana"));
}

#[tokio::test]
async fn models_shows_the_count_by_maker_and_cross_maker_comparisons_are_in_the_sitemap() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page("/models").await;
    assert_eq!(status, StatusCode::OK);
    let counts = page.texts("[data-testid=maker-counts] li");
    assert!(counts.contains(&"Black Forest Labs: 6".to_string()), "{counts:?}");
    assert!(counts.contains(&"OpenAI: 3".to_string()) && counts.contains(&"Google: 3".to_string()), "{counts:?}");
    assert!(counts.len() >= 6, "{counts:?}");
    assert!(page.text("#makers-heading").is_some_and(|h| h.starts_with("20 models from 11 makers")));
    let prices = page.texts("[data-testid=starting-price]");
    assert!(!prices.is_empty());
    assert!(page.source.contains("up to</span> <span class=\"price\" data-testid=\"starting-price\">150 credits"));

    let path = "/compare/gpt-image-2-vs-nano-banana-2/typography";
    let (status, page) = app.page(path).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed(path);
    assert_eq!(page.text("h1").as_deref(), Some("GPT Image 2 vs Nano Banana 2 for text and typography"));
    let html = &page.source;
    for expected in [
        "OpenAI",
        "Google",
        "Custom sizes in multiples of 16",
        "For a finished poster",
        "up to 150 credits",
        "up to 31 credits",
    ] {
        assert!(html.contains(expected), "{expected}");
    }
    assert!(page.count("table") >= 1, "a feature table");
    assert!(html.contains("Why do both models say"), "the FAQ");
    let sitemap = app.get("/sitemap.xml").await.text().await.expect("sitemap");
    for c in app.state.catalog.current().comparisons() {
        let p = match &c.use_case {
            Some(u) => format!("/compare/{}-vs-{}/{u}", c.model_a, c.model_b),
            None => format!("/compare/{}-vs-{}", c.model_a, c.model_b),
        };
        assert!(sitemap.contains(&format!("{p}</loc>")), "{p} in the sitemap");
    }
}

#[tokio::test]
async fn providers_check_asks_each_configured_provider_once_without_generating() {
    let openai = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/models"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "list",
            "data": [{"id": "gpt-image-2", "object": "model"}, {"id": "gpt-4.1", "object": "model"}]})))
        .expect(1)
        .mount(&openai)
        .await;
    let replicate = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/account"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"title": "Unauthenticated",
            "detail": "You did not pass a valid authentication token"})))
        .expect(1)
        .mount(&replicate)
        .await;
    let mut config = test_config();
    config.openai_api_key = Some(Secret::new("sk-test"));
    config.openai_api_url = base(&openai);
    config.replicate_api_token = Some(Secret::new("r8_bad"));
    config.replicate_api_url = base(&replicate);
    let results = check_all(&config).await;
    let by = |p: &str| results.iter().find(|r| r.provider == p).expect("provider");
    assert_eq!(by("openai").status, CheckStatus::Ok);
    assert!(by("openai").detail.contains("1 GPT Image models"), "{}", by("openai").detail);
    assert_eq!(by("replicate").status, CheckStatus::Failed);
    assert!(by("replicate").detail.contains("401"));
    for p in ["bfl", "google", "fal"] {
        assert_eq!(by(p).status, CheckStatus::NotConfigured, "{p}");
    }
    let report = faceoff::providers::check::report(&results);
    assert!(report.contains("openai") && report.contains("FAILED") && !report.contains("sk-test"), "{report}");
}
