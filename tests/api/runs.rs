//! Runs: the studio, POST /runs, holds → charges/refunds through the worker pool, the live
//! stream, crash safety of the job queue, and the JSON API.

use std::time::{Duration, Instant};

use faceoff::{
    jobs::{self, Engine, Outcome, Settled, WorkerOptions},
    ledger::{self, HoldStatus, Kind},
    runs::create::{RunInput, create_run, validate},
};
use reqwest::{StatusCode, multipart};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Browser, Form, Page, TEST_PASSWORD, TestApp, TestUser, location, new_client, wait_until_settled};

fn fast_options(workers: usize) -> WorkerOptions {
    WorkerOptions {
        workers,
        lease: Duration::from_secs(30),
        idle_poll: Duration::from_millis(100),
        per_provider: 24,
        max_transient: 3,
        running_limits: faceoff::jobs::RunningLimits::NONE,
    }
}

/// Starts the worker pool of the test app; stops it when dropped.
struct Workers(CancellationToken);

impl Drop for Workers {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn start_workers(app: &TestApp) -> Workers {
    let token = CancellationToken::new();
    jobs::spawn_workers(
        app.pool.clone(),
        app.state.store.clone(),
        app.state.providers.clone(),
        fast_options(2),
        token.clone(),
    );
    Workers(token)
}

/// The studio's form as the default browser loaded it once: the hidden fields it carries.
struct Studio {
    csrf: String,
    key: String,
}

async fn open_studio(app: &TestApp) -> Studio {
    let (status, page) = app.page("/studio?models=flux-2,flux-ultra-1-1").await;
    assert_eq!(status, StatusCode::OK);
    Studio {
        csrf: page.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf"),
        key: page.attr("input[name=idempotency_key]", "value").expect("idempotency key"),
    }
}

/// What the studio form submits: its hidden fields (from [`Studio`]) and what the user chose.
/// Defaults: a prompt, Flux 2 and Ultra, 2K, 1:1, no seed, no reference image.
struct RunForm {
    csrf: String,
    key: String,
    prompt: String,
    models: Vec<String>,
    mode: String,
    aspect_ratio: String,
    seed: String,
    reference: Option<multipart::Part>,
}

impl RunForm {
    fn new(studio: &Studio) -> RunForm {
        RunForm {
            csrf: studio.csrf.clone(),
            key: studio.key.clone(),
            prompt: "a lighthouse at dusk".into(),
            models: vec!["flux-2".into(), "flux-ultra-1-1".into()],
            mode: "2k".into(),
            aspect_ratio: "1:1".into(),
            seed: String::new(),
            reference: None,
        }
    }

    fn prompt(mut self, prompt: &str) -> Self {
        self.prompt = prompt.into();
        self
    }

    fn models(mut self, models: &[&str]) -> Self {
        self.models = models.iter().map(|m| m.to_string()).collect();
        self
    }

    fn mode(mut self, mode: &str) -> Self {
        self.mode = mode.into();
        self
    }

    fn aspect_ratio(mut self, aspect_ratio: &str) -> Self {
        self.aspect_ratio = aspect_ratio.into();
        self
    }

    fn seed(mut self, seed: &str) -> Self {
        self.seed = seed.into();
        self
    }

    /// Attaches a reference image (the file field `reference_image`).
    fn reference(mut self, part: multipart::Part) -> Self {
        self.reference = Some(part);
        self
    }

    /// Replaces the page's CSRF token (a forged submission).
    fn csrf(mut self, csrf: &str) -> Self {
        self.csrf = csrf.into();
        self
    }

    /// Replaces the page's idempotency key.
    fn key(mut self, key: &str) -> Self {
        self.key = key.into();
        self
    }

    fn into_multipart(self) -> multipart::Form {
        let mut f = multipart::Form::new()
            .text("csrf_token", self.csrf)
            .text("idempotency_key", self.key)
            .text("prompt", self.prompt)
            .text("mode", self.mode)
            .text("aspect_ratio", self.aspect_ratio)
            .text("seed", self.seed);
        for m in self.models {
            f = f.text("models", m);
        }
        if let Some(part) = self.reference {
            f = f.part("reference_image", part);
        }
        f
    }
}

async fn post_run(app: &TestApp, form: RunForm) -> reqwest::Response {
    app.browser.post_multipart("/runs", form.into_multipart()).await
}

fn run_id_from(response: &reqwest::Response) -> Uuid {
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "expected a redirect to the run");
    let location = location(response);
    location.strip_prefix("/runs/").and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("location {location}"))
}

async fn balance(app: &TestApp, user: &TestUser) -> ledger::Balance {
    ledger::balance(&app.pool, user.id).await.expect("balance")
}

/// Reads an SSE stream until an event named `done`; returns the event names seen.
async fn read_events_until_done(response: reqwest::Response) -> (Vec<String>, String) {
    let mut response = response;
    let mut buffer = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk()).await.expect("event in time");
        match chunk.expect("stream") {
            Some(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            None => break,
        }
        if buffer.contains("event: done") && buffer.ends_with("\n\n") {
            break;
        }
        assert!(Instant::now() < deadline, "no done event: {buffer}");
    }
    let names = buffer.lines().filter_map(|l| l.strip_prefix("event: ")).map(str::to_string).collect();
    let last_data = buffer.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().unwrap_or("").to_string();
    (names, last_data)
}

#[tokio::test]
async fn a_two_model_run_holds_then_charges_and_streams_updates() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;
    let studio = open_studio(&app).await;
    let form = RunForm::new(&studio)
        .prompt("a candid café portrait")
        .models(&["flux-2", "flux-ultra-1-1"])
        .aspect_ratio("3:4");
    let response = post_run(&app, form).await;
    let run_id = run_id_from(&response);

    // Held at once, before any worker ran.
    let (status, page) = app.page(&format!("/runs/{run_id}")).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("run page");
    assert_eq!(page.text("[data-testid=held]").as_deref(), Some("38"));
    assert_eq!(page.text("[data-testid=balance]").as_deref(), Some("62"));
    assert_eq!(page.count("figure[data-job]"), 2);
    assert!(page.source.contains("http-equiv=\"refresh\""), "no-JS refresh while pending");
    assert!(page.attr("script[src*='runs.js']", "src").is_some());

    // The live stream: the current state first, then updates until done.
    let events = app.get(&format!("/runs/{run_id}/events")).await;
    assert_eq!(events.status(), StatusCode::OK);
    assert!(events.headers()["content-type"].to_str().expect("ct").starts_with("text/event-stream"));
    let _workers = start_workers(&app);
    let (names, last) = read_events_until_done(events).await;
    assert!(names.len() >= 2 && names.first().map(String::as_str) == Some("run"), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("done"));
    let last: serde_json::Value = serde_json::from_str(&last).expect("json");
    assert_eq!(last["status"], "done");
    assert_eq!(last["charged"], 38);

    let jobs = wait_until_settled(&app.pool, run_id).await;
    assert!(jobs.iter().all(|j| j.status() == jobs::JobStatus::Delivered && j.charged == Some(j.price)));
    assert_eq!(balance(&app, &user).await, ledger::Balance { available: 62, held: 0 });

    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    assert_eq!(page.text("[data-testid=balance]").as_deref(), Some("62"));
    assert_eq!(page.count("[data-testid=held]"), 0);
    assert_eq!(page.count("figure[data-job] img"), 2);
    assert_eq!(page.count("a[download]"), 2);
    assert!(!page.source.contains("http-equiv=\"refresh\""));
    let image = page.attr("figure[data-job] img", "src").expect("image");
    assert!(image.starts_with(&format!("/media/runs/{run_id}/")) && image.ends_with(".jpg"), "{image}");
    let bytes = app.get(&image).await;
    assert_eq!(bytes.status(), StatusCode::OK);
    assert_eq!(bytes.headers()["content-type"], "image/jpeg");

    // History with WebP thumbnails.
    let (status, history) = app.page("/runs").await;
    assert_eq!(status, StatusCode::OK);
    history.assert_well_formed("history");
    let thumbs = history.attrs(".run-thumbs img", "src");
    assert_eq!(thumbs.len(), 2);
    assert!(thumbs.iter().all(|t| t.ends_with(".thumb.webp")));
    let thumb = app.get(&thumbs[0]).await;
    assert_eq!(thumb.headers()["content-type"], "image/webp");

    // Someone else sees nothing.
    let other = app.create_user("other@example.com", 100).await;
    let others = app.browser();
    others.sign_in(&other).await;
    assert_eq!(others.get(&format!("/runs/{run_id}")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(others.get(&format!("/runs/{run_id}/events")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(others.get(&image).await.status(), StatusCode::NOT_FOUND);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_failed_model_is_not_charged_and_the_history_explains_both_lines() {
    let app = TestApp::spawn_with(|c| c.sandbox_fail = vec!["flux-ultra-1-1".into()]).await;
    let user = app.signed_in_user(100).await;
    let studio = open_studio(&app).await;
    let form = RunForm::new(&studio).prompt("a lighthouse").models(&["flux-2", "flux-ultra-1-1"]).seed("7");
    let run_id = run_id_from(&post_run(&app, form).await);
    let _workers = start_workers(&app);
    let jobs = wait_until_settled(&app.pool, run_id).await;
    let flux2 = jobs.iter().find(|j| j.model_slug == "flux-2").expect("flux-2");
    let ultra = jobs.iter().find(|j| j.model_slug == "flux-ultra-1-1").expect("ultra");
    assert_eq!((flux2.status(), flux2.charged), (jobs::JobStatus::Delivered, Some(22)));
    assert_eq!((ultra.status(), ultra.charged), (jobs::JobStatus::Failed, Some(0)));
    assert_eq!(balance(&app, &user).await, ledger::Balance { available: 78, held: 0 });

    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    let message = page.text("[data-testid=not-charged]").expect("not-charged message");
    assert!(message.contains("you were not charged"), "{message}");
    assert_eq!(page.text("[data-testid=seed]").as_deref(), Some("7"));

    let history = ledger::history(&app.pool, user.id, 50, 0).await.expect("history");
    let for_job = |job: Uuid| history.iter().filter(|l| l.job_id == Some(job)).collect::<Vec<_>>();
    let ultra_lines = for_job(ultra.job_id);
    assert!(
        ultra_lines
            .iter()
            .any(|l| l.kind == Kind::Hold && l.amount == -16 && l.hold_status == Some(HoldStatus::Voided))
    );
    assert!(
        ultra_lines.iter().any(|l| l.kind == Kind::HoldRelease && l.amount == 16 && l.memo.contains("not charged"))
    );
    let flux_lines = for_job(flux2.job_id);
    assert!(
        flux_lines.iter().any(|l| l.kind == Kind::Hold && l.amount == -22 && l.hold_status == Some(HoldStatus::Posted))
    );
    assert!(flux_lines.iter().all(|l| l.run_id == Some(run_id)));
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_moderated_prompt_says_the_safety_filter_blocked_it() {
    let app = TestApp::spawn_with(|c| c.sandbox_fail = vec!["flux-ultra-1-1:moderated".into()]).await;
    let user = app.signed_in_user(100).await;
    let studio = open_studio(&app).await;
    let form = RunForm::new(&studio).prompt("a cat").models(&["flux-2", "flux-ultra-1-1"]);
    let run_id = run_id_from(&post_run(&app, form).await);
    let _workers = start_workers(&app);
    wait_until_settled(&app.pool, run_id).await;
    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    let message = page.text("[data-testid=not-charged]").expect("message");
    assert!(message.contains("The provider's safety filter blocked this prompt — you were not charged"), "{message}");
    assert_eq!(balance(&app, &user).await.available, 78);
}

async fn direct_run(app: &TestApp, user: &TestUser, key: &str) -> Uuid {
    let catalog = app.state.catalog.current();
    let input = RunInput {
        prompt: "crash test".into(),
        models: vec!["flux-2".into(), "flux-ultra-1-1".into()],
        mode: "2k".into(),
        aspect_ratio: "1:1".into(),
        seed: "1".into(),
        ..RunInput::default()
    };
    let valid = validate(&catalog, &input, None).expect("valid");
    create_run(&app.pool, &app.state.store, &app.state.config.queue, user.id, &valid, key)
        .await
        .expect("created")
        .run_id
}

#[tokio::test]
async fn a_dead_workers_job_is_picked_up_again_and_a_late_worker_cannot_settle_it() {
    let app = TestApp::spawn().await;
    let user = app.create_user("crash@example.com", 100).await;
    let run_id = direct_run(&app, &user, "crash-1").await;

    // Worker A claims a job with a short lease and "dies".
    let dead = jobs::claim(&app.pool, Duration::from_millis(300), &[]).await.expect("claim").expect("a job");
    assert_eq!(dead.attempts, 1);
    // While its lease is valid nobody else takes that job.
    let other = jobs::claim(&app.pool, Duration::from_secs(30), &[]).await.expect("claim").expect("the other job");
    assert_ne!(other.job_id, dead.job_id);
    assert!(jobs::claim(&app.pool, Duration::from_secs(30), &[]).await.expect("claim").is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Worker B picks the expired job up again and finishes it.
    let engine = Engine::new(app.pool.clone(), app.state.store.clone(), app.state.providers.clone(), fast_options(1));
    let shutdown = CancellationToken::new();
    let again = jobs::claim(&app.pool, Duration::from_secs(30), &[]).await.expect("claim").expect("reclaimed");
    assert_eq!(again.job_id, dead.job_id);
    assert_eq!(again.attempts, 2);
    assert_ne!(again.lease_token, dead.lease_token);
    engine.run_claimed(again, &shutdown).await.expect("run");
    engine.run_claimed(other, &shutdown).await.expect("run");
    let jobs = wait_until_settled(&app.pool, run_id).await;
    assert!(jobs.iter().all(|j| j.status() == jobs::JobStatus::Delivered));

    // Worker A comes back late: its settle changes nothing.
    let late = jobs::settle(&app.pool, &dead, &Outcome::Failed("late".into())).await.expect("settle");
    assert_eq!(late, Settled::LostLease);
    assert!(!jobs::heartbeat(&app.pool, &dead, Duration::from_secs(30)).await.expect("heartbeat"));
    let after = jobs::for_run(&app.pool, run_id).await.expect("jobs");
    assert!(after.iter().all(|j| j.status() == jobs::JobStatus::Delivered && j.charged == Some(j.price)));
    // Charged exactly once.
    assert_eq!(balance(&app, &user).await, ledger::Balance { available: 62, held: 0 });
    let posts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_transfer WHERE run_id = $1 AND kind = 'hold_post'")
            .bind(run_id)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(posts, 2);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_resumed_job_reuses_its_recorded_provider_task() {
    let app = TestApp::spawn().await;
    let user = app.create_user("resume@example.com", 100).await;
    let run_id = direct_run(&app, &user, "resume-1").await;
    let first = jobs::claim(&app.pool, Duration::from_millis(200), &[]).await.expect("claim").expect("job");
    let submission = faceoff::providers::Submission {
        task_id: "sandbox-recorded".into(),
        polling_url: None,
        cost: None,
        submitted_at_ms: 0,
    };
    let route = format!("sandbox:{}", first.endpoint);
    assert!(jobs::record_submission(&app.pool, &first, "sandbox", &route, &submission).await.expect("record"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let engine = Engine::new(app.pool.clone(), app.state.store.clone(), app.state.providers.clone(), fast_options(1));
    // Two jobs are claimable now (the other one never ran); take both, keep the resumed one.
    let a = jobs::claim(&app.pool, Duration::from_secs(30), &[]).await.expect("claim").expect("job");
    let b = jobs::claim(&app.pool, Duration::from_secs(30), &[]).await.expect("claim").expect("job");
    let again = if a.job_id == first.job_id { a } else { b };
    assert_eq!(again.job_id, first.job_id);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.submission.as_ref().map(|s| s.0.task_id.as_str()), Some("sandbox-recorded"));
    engine.run_claimed(again, &CancellationToken::new()).await.expect("run");
    let recorded: serde_json::Value = sqlx::query_scalar("SELECT submission FROM generation_job WHERE job_id = $1")
        .bind(first.job_id)
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(recorded["task_id"], "sandbox-recorded", "no second task was submitted");
    let _ = run_id;
}

#[tokio::test]
async fn a_double_submit_creates_one_run() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;
    let studio = open_studio(&app).await;
    // The same page's form, sent twice.
    let form = || RunForm::new(&studio).prompt("twice").models(&["flux-2", "flux-ultra-1-1"]).mode("2k");
    let first = post_run(&app, form()).await;
    let second = post_run(&app, form()).await;
    assert_eq!(run_id_from(&first), run_id_from(&second));
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM generation_run").fetch_one(&app.pool).await.expect("n");
    assert_eq!(runs, 1);
    assert_eq!(balance(&app, &user).await, ledger::Balance { available: 62, held: 38 });
}

#[tokio::test]
async fn insufficient_credits_is_402_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(20).await;
    let (_, page) = app.page("/studio?models=flux-2,flux-ultra-1-1").await;
    page.assert_well_formed("studio");
    assert_eq!(page.text("[data-testid=quote-total]").as_deref(), Some("38"));
    assert_eq!(page.text("[data-testid=quote-missing]").as_deref(), Some("18"));
    assert!(page.attr("[data-quote-missing] a", "href").is_some_and(|h| h == "/credits"));
    let studio = open_studio(&app).await;
    let form = RunForm::new(&studio).prompt("too pricey").models(&["flux-2", "flux-ultra-1-1"]).mode("2k");
    let response = post_run(&app, form).await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let page = Page::from_response(response).await;
    let message = page.text("[data-testid=form-error]").expect("message");
    assert!(message.contains("needs 38 credits") && message.contains("you have 20"), "{message}");
    assert_eq!(page.attr("textarea[name=prompt]", "id").as_deref(), Some("prompt"));
    assert_eq!(page.text("textarea[name=prompt]").as_deref(), Some("too pricey"));
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM generation_run), (SELECT count(*) FROM generation_job), (SELECT count(*) FROM ledger_hold)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!(counts, (0, 0, 0));
    assert_eq!(balance(&app, &user).await, ledger::Balance { available: 20, held: 0 });
}

#[tokio::test]
async fn invalid_input_rerenders_the_form_with_the_message_at_the_field() {
    let app = TestApp::spawn().await;
    app.signed_in_user(100).await;
    let studio = open_studio(&app).await;
    // Each form is the default (Flux 2 and Ultra, 2K, 1:1: valid) with one thing wrong.
    let form = || RunForm::new(&studio);
    let cases: Vec<(RunForm, &str, &str)> = vec![
        (form().prompt("   "), "prompt", "write a prompt"),
        (form().prompt(&"x".repeat(2001)), "prompt", "2001"),
        (form().models(&["flux-2"]), "models", "choose 2 to 4"),
        (
            form().models(&["flux-2", "flux-2:klein-9b", "flux-ultra-1-1", "flux-2-max", "flux-2-flex"]),
            "models",
            "choose 2 to 4",
        ),
        (form().models(&["flux-2", "no-such-model"]), "models", "no model"),
        (form().models(&["flux-2", "flux-ultra-1-1"]).mode("4k"), "mode", "no 4k mode"),
        (form().aspect_ratio("21:9"), "aspect_ratio", "21:9"),
        (form().seed("-3"), "seed", "whole number"),
        (
            form().models(&["flux-2", "flux-ultra-1-1"]).reference(
                multipart::Part::bytes(faceoff::providers::bfl::sample_jpeg(32, 32).to_vec()).file_name("r.jpg"),
            ),
            "reference_image",
            "does not accept a reference image",
        ),
        (
            form()
                .models(&["flux-2", "flux-2:klein-9b"])
                .reference(multipart::Part::bytes(b"GIF89a not really".to_vec()).file_name("r.gif")),
            "reference_image",
            "PNG, JPEG or WebP",
        ),
    ];
    for (body, field, expected) in cases {
        let response = post_run(&app, body).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let page = Page::from_response(response).await;
        let message = page.text(&format!("[data-field={field}]")).unwrap_or_else(|| panic!("no message at {field}"));
        assert!(message.contains(expected), "{field}: {message}");
    }
    // A missing CSRF token is refused; a missing idempotency key is a 400.
    let response = post_run(&app, form().prompt("x").csrf("wrong").key("k")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = post_run(&app, form().prompt("x").key("")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM generation_run").fetch_one(&app.pool).await.expect("n");
    assert_eq!(runs, 0);
}

#[tokio::test]
async fn the_studio_offers_common_ratios_variants_and_image_to_image_only_when_all_support_it() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/studio").await.status(), StatusCode::SEE_OTHER, "signed out: log in first");
    app.signed_in_user(100).await;
    let (status, page) = app.page("/studio?models=flux-2,flux-ultra-1-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.attrs("select[name=aspect_ratio] option", "value"), vec!["1:1", "16:9", "9:16", "3:4", "4:3"]);
    assert!(page.attrs("input[name=models][checked]", "value") == vec!["flux-2", "flux-ultra-1-1"]);
    assert!(page.attrs("input[name=models]", "value").contains(&"flux-2:klein-9b".to_string()));
    assert!(page.attr("[data-reference]", "hidden").is_some(), "Ultra takes no reference image");
    assert!(page.attr("input[name=mode][value='4k']", "disabled").is_some());
    let (_, page) = app.page("/studio?models=flux-2&models=flux-2:klein-9b&mode=4k").await;
    assert!(page.attr("[data-reference]", "hidden").is_none());
    assert_eq!(page.text("[data-testid=quote-total]").as_deref(), Some("64"));
}

#[tokio::test]
async fn image_to_image_runs_store_and_send_the_reference() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;
    let studio = open_studio(&app).await;
    let png: Vec<u8> = {
        // Noise, so the PNG is well over the default 64 KiB body limit (about 1.5 MB).
        let img = image::RgbImage::from_fn(720, 540, |x, y| {
            let v = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)).wrapping_mul(2246822519);
            image::Rgb([(v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).expect("png");
        out.into_inner()
    };
    assert!(png.len() > 1_000_000, "{}", png.len());
    // Over 10 MB: refused with a message, nothing created.
    let form = || RunForm::new(&studio).models(&["flux-2", "flux-2:klein-9b"]);
    let huge = form()
        .prompt("too big")
        .reference(multipart::Part::bytes(vec![0u8; 10 * 1024 * 1024 + 1]).file_name("big.png"));
    let response = post_run(&app, huge).await;
    assert!(response.status().is_client_error(), "{}", response.status());
    let body = form()
        .prompt("make it blue")
        .reference(multipart::Part::bytes(png).file_name("ref.png").mime_str("image/png").expect("mime"));
    let run_id = run_id_from(&post_run(&app, body).await);
    let run = faceoff::runs::find(&app.pool, run_id).await.expect("db").expect("run");
    let key = run.reference_key.expect("reference stored");
    let media = faceoff::storage::find(&app.pool, &key).await.expect("db").expect("media");
    assert_eq!(media.owner_user_id, Some(user.id));
    assert_eq!((media.width, media.height), (Some(720), Some(540)));
    let _workers = start_workers(&app);
    let jobs = wait_until_settled(&app.pool, run_id).await;
    assert!(jobs.iter().all(|j| j.status() == jobs::JobStatus::Delivered));
}

/// Revokes the first personal API key listed on `/account/api-keys` with `browser`.
async fn revoke_first_key(browser: &Browser) {
    let (_, page) = browser.page("/account/api-keys").await;
    let key_id = page.attr("input[name=api_key_id]", "value").expect("key id");
    let revoked =
        Form::on(&page, "/account/api-keys").submit(browser, &[("action", "revoke"), ("api_key_id", &key_id)]).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
}

/// Creates a personal API key on `/account/api-keys` with `browser`; returns the key (shown once).
async fn api_key(browser: &Browser) -> String {
    let response = browser
        .submit(
            "/account/api-keys",
            "/account/api-keys",
            &[("action", "create"), ("name", "script"), ("password", TEST_PASSWORD)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = Page::from_response(response).await;
    page.assert_well_formed("api keys");
    page.text("[data-testid=new-api-key]").expect("key shown once")
}

#[tokio::test]
async fn the_json_api_with_personal_keys() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;
    let key = api_key(&app.browser).await;
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_hash FROM api_key").fetch_one(&app.pool).await.expect("row");
    assert_eq!(stored.len(), 32, "only the sha256 is stored");
    let (_, page) = app.page("/account/api-keys").await;
    assert_eq!(page.count("[data-testid=new-api-key]"), 0, "shown only once");

    let (api, _) = new_client();
    let get = |path: &str| api.get(app.url(path)).bearer_auth(&key);

    let unauthorized = api.get(app.url("/api/v1/me")).send().await.expect("me");
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = unauthorized.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized");
    let bad = api.get(app.url("/api/v1/me")).bearer_auth("fo_nope").send().await.expect("me");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

    let last_used = || async {
        sqlx::query_scalar::<_, Option<time::OffsetDateTime>>("SELECT last_used_at FROM api_key")
            .fetch_one(&app.pool)
            .await
            .expect("last_used_at")
    };
    assert_eq!(last_used().await, None, "unused so far");
    let me: serde_json::Value = get("/api/v1/me").send().await.expect("me").json().await.expect("json");
    assert_eq!(me["available"], 100);
    assert_eq!(me["email"], user.email.as_str());
    // The use is recorded, and at most once a minute (no write per request).
    let first_use = last_used().await.expect("the use is recorded");
    assert_eq!(get("/api/v1/me").send().await.expect("me").status(), StatusCode::OK);
    assert_eq!(last_used().await, Some(first_use), "not rewritten within the minute");
    sqlx::query("UPDATE api_key SET last_used_at = last_used_at - interval '2 minutes'")
        .execute(&app.pool)
        .await
        .expect("age the use");
    assert_eq!(get("/api/v1/me").send().await.expect("me").status(), StatusCode::OK);
    assert!(last_used().await.expect("used") > first_use, "recorded again after a minute");

    let models: serde_json::Value = get("/api/v1/models").send().await.expect("models").json().await.expect("json");
    let flux2 = models.as_array().expect("list").iter().find(|m| m["slug"] == "flux-2").expect("flux-2");
    assert_eq!(flux2["variants"][0]["prices"]["2k"], 22);
    assert_eq!((flux2["maker"].as_str(), flux2["lifecycle"].as_str()), (Some("Black Forest Labs"), Some("active")));
    assert_eq!(flux2["usage_billed"], false);
    // Every maker; retiring models listed with their lifecycle, retired ones not at all.
    let list = models.as_array().expect("list");
    let find = |slug: &str| list.iter().find(|m| m["slug"] == slug);
    assert_eq!(
        find("gpt-image-2").map(|m| (m["maker"].clone(), m["usage_billed"].clone())),
        Some((json!("OpenAI"), json!(true)))
    );
    assert_eq!(find("gpt-image-1-5").map(|m| m["lifecycle"].clone()), Some(json!("retiring")));
    assert!(find("gpt-image-1").is_none() && find("nano-banana").is_none(), "retired models are not listed");
    let makers: std::collections::HashSet<&str> = list.iter().filter_map(|m| m["maker"].as_str()).collect();
    assert!(list.len() >= 16 && makers.len() >= 6, "{} models, {makers:?}", list.len());
    let retired = api
        .post(app.url("/api/v1/runs"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "x", "models": ["gpt-image-1", "flux-2"], "mode": "2k"}))
        .send()
        .await
        .expect("run");
    assert_eq!(retired.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = retired.json().await.expect("json");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("retired") && m.contains("GPT Image 2")),
        "{body}"
    );

    let quote: serde_json::Value = api
        .post(app.url("/api/v1/quote"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"models": ["flux-2", "flux-ultra-1-1"], "mode": "2k"}))
        .send()
        .await
        .expect("quote")
        .json()
        .await
        .expect("json");
    assert_eq!((quote["total"].as_i64(), quote["missing"].as_i64()), (Some(38), Some(0)));

    let body = serde_json::json!({"prompt": "api run", "models": ["flux-2", "flux-ultra-1-1"], "mode": "2k", "aspect_ratio": "16:9", "seed": 99});
    let send = |body: serde_json::Value, idem: &str| {
        api.post(app.url("/api/v1/runs")).bearer_auth(&key).header("Idempotency-Key", idem).json(&body).send()
    };
    let created = send(body.clone(), "api-1").await.expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);
    let run: serde_json::Value = created.json().await.expect("json");
    assert_eq!(run["total_price"], 38);
    assert_eq!(run["seed"], 99);
    assert_eq!(run["jobs"].as_array().map(Vec::len), Some(2));
    let replay = send(body.clone(), "api-1").await.expect("replay");
    assert_eq!(replay.status(), StatusCode::OK);
    let replayed: serde_json::Value = replay.json().await.expect("json");
    assert_eq!(replayed["id"], run["id"]);

    let _workers = start_workers(&app);
    let id = run["id"].as_str().expect("id").to_string();
    wait_until_settled(&app.pool, id.parse().expect("uuid")).await;
    let fetched: serde_json::Value =
        get(&format!("/api/v1/runs/{id}")).send().await.expect("run").json().await.expect("json");
    assert_eq!(fetched["status"], "done");
    assert_eq!(fetched["charged"], 38);
    assert!(fetched["jobs"][0]["image_url"].as_str().is_some_and(|u| u.starts_with("/media/runs/")));
    let job_id = fetched["jobs"][0]["id"].as_str().expect("job id");
    let image = get(&format!("/api/v1/runs/{id}/jobs/{job_id}/image")).send().await.expect("image");
    assert_eq!(image.status(), StatusCode::OK);
    assert_eq!(image.headers()["content-type"], "image/jpeg");
    assert!(image.bytes().await.expect("bytes").starts_with(&[0xFF, 0xD8]));

    // Errors: invalid input, not enough credits, someone else's run.
    let invalid = send(serde_json::json!({"prompt": "", "models": ["flux-2"]}), "api-2").await.expect("invalid");
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: serde_json::Value = invalid.json().await.expect("json");
    assert_eq!(err["error"]["code"], "invalid_input");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains("prompt") && m.contains("models")));
    let pricey = send(
        serde_json::json!({"prompt": "x", "models": ["flux-2-max", "flux-2-flex", "flux-2"], "mode": "4k"}),
        "api-3",
    )
    .await
    .expect("402");
    assert_eq!(pricey.status(), StatusCode::PAYMENT_REQUIRED);
    let err: serde_json::Value = pricey.json().await.expect("json");
    assert_eq!(err["error"]["code"], "insufficient_credits");
    let malformed = api
        .post(app.url("/api/v1/runs"))
        .bearer_auth(&key)
        .body("{nope")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("bad json");
    assert!(malformed.status().is_client_error());
    let err: serde_json::Value = malformed.json().await.expect("json error");
    assert!(err["error"]["code"].is_string());

    let other = app.create_user("api-other@example.com", 100).await;
    let others = app.browser();
    others.sign_in(&other).await;
    let other_key = api_key(&others).await;
    let foreign = api.get(app.url(&format!("/api/v1/runs/{id}"))).bearer_auth(&other_key).send().await.expect("run");
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);

    // Revoked keys stop working.
    revoke_first_key(&app.browser).await;
    assert_eq!(get("/api/v1/me").send().await.expect("me").status(), StatusCode::UNAUTHORIZED);
    app.assert_invariants().await;
}

/// `POST /api/v1/runs` answers a new run from its creation statement: the answer is what
/// reading the run back shows, places in the queue included; a used key replays its run before
/// any other check (here: a wallet that could not pay for it again) or conflicts.
#[tokio::test]
async fn a_new_runs_answer_is_what_reading_it_back_shows() {
    let app = TestApp::spawn().await;
    app.signed_in_user(76).await;
    let key = api_key(&app.browser).await;
    let (api, _) = new_client();
    let body = json!({"prompt": "answer", "models": ["flux-2", "flux-ultra-1-1"], "mode": "2k", "seed": 7});
    let send = |body: serde_json::Value, idem: &str| {
        api.post(app.url("/api/v1/runs")).bearer_auth(&key).header("Idempotency-Key", idem).json(&body).send()
    };
    let mut answers = Vec::new();
    for idem in ["answer-1", "answer-2"] {
        let created = send(body.clone(), idem).await.expect("create");
        assert_eq!(created.status(), StatusCode::CREATED);
        let answer: serde_json::Value = created.json().await.expect("json");
        let id = answer["id"].as_str().expect("id").to_string();
        let fetched: serde_json::Value = api
            .get(app.url(&format!("/api/v1/runs/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(answer, fetched, "the answer is the run as read back");
        answers.push(answer);
    }
    // Both models are on one route: the second run's jobs queue behind the first run's two.
    let ahead = |run: &serde_json::Value| -> Vec<i64> {
        run["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["queue"]["ahead"].as_i64()).collect()
    };
    assert_eq!(ahead(&answers[0]), vec![0, 1]);
    assert_eq!(ahead(&answers[1]), vec![2, 3]);
    assert_eq!(answers[1]["jobs"][0]["queue"]["label"], "2 jobs ahead");

    // The wallet is empty now: a retry still gets its run, a new key is refused, another
    // request with a used key is a conflict; nothing more is created.
    let replay = send(body.clone(), "answer-1").await.expect("replay");
    assert_eq!(replay.status(), StatusCode::OK);
    let replayed: serde_json::Value = replay.json().await.expect("json");
    assert_eq!(replayed["id"], answers[0]["id"]);
    assert_eq!(send(body.clone(), "answer-3").await.expect("402").status(), StatusCode::PAYMENT_REQUIRED);
    let other = json!({"prompt": "another", "models": ["flux-2", "flux-ultra-1-1"], "mode": "2k"});
    assert_eq!(send(other, "answer-1").await.expect("409").status(), StatusCode::CONFLICT);
    let invalid = json!({"prompt": "", "models": ["flux-2"]});
    assert_eq!(send(invalid.clone(), "answer-2").await.expect("409").status(), StatusCode::CONFLICT);
    assert_eq!(send(invalid, "answer-4").await.expect("422").status(), StatusCode::UNPROCESSABLE_ENTITY);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM generation_run").fetch_one(&app.pool).await.expect("n");
    assert_eq!(runs, 2);
    app.assert_invariants().await;
}

/// API keys are cached per instance while its listener follows revocations: a key revoked on
/// the keys page is refused at once by the instance that revoked it and, as soon as the
/// trigger's notification arrives, by another instance over the same database.
#[tokio::test]
async fn a_revoked_key_is_refused_at_once_by_every_instance_that_cached_it() {
    let app = TestApp::spawn().await;
    app.signed_in_user(100).await;
    let cache = app.state.api_keys.clone();
    cache.spawn_listener(app.pool.clone(), app.state.shutdown.clone());
    // Another instance's cache, with its own listener.
    let other = std::sync::Arc::new(faceoff::accounts::api_keys::KeyCache::default());
    let stop = CancellationToken::new();
    other.spawn_listener(app.pool.clone(), stop.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(cache.is_live() && other.is_live()) {
        assert!(Instant::now() < deadline, "the listeners did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = api_key(&app.browser).await;
    let (api, _) = new_client();
    let me = || api.get(app.url("/api/v1/me")).bearer_auth(&key).send();
    assert_eq!(me().await.expect("me").status(), StatusCode::OK);
    assert!(cache.holds(&key), "cached after its first use");
    assert!(other.authenticate(&app.pool, &key).await.expect("lookup").is_some());
    assert!(other.holds(&key));

    // The cache answers without asking the database: a revocation that announces nothing (the
    // trigger off) goes unnoticed, which is why every path goes through the trigger.
    sqlx::query("ALTER TABLE api_key DISABLE TRIGGER api_key_revoked").execute(&app.pool).await.expect("off");
    sqlx::query("UPDATE api_key SET revoked_at = now()").execute(&app.pool).await.expect("revoke quietly");
    assert_eq!(me().await.expect("me").status(), StatusCode::OK, "served from the cache");
    sqlx::query("UPDATE api_key SET revoked_at = NULL").execute(&app.pool).await.expect("restore");
    sqlx::query("ALTER TABLE api_key ENABLE TRIGGER api_key_revoked").execute(&app.pool).await.expect("on");

    revoke_first_key(&app.browser).await;
    assert_eq!(me().await.expect("me").status(), StatusCode::UNAUTHORIZED, "refused at once where revoked");
    assert!(!cache.holds(&key));
    let deadline = Instant::now() + Duration::from_secs(20);
    while other.holds(&key) {
        assert!(Instant::now() < deadline, "the other instance kept the revoked key");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(other.authenticate(&app.pool, &key).await.expect("lookup").is_none());

    // A deleted key (an account deletion deletes them) is announced too.
    let second = api_key(&app.browser).await;
    assert!(other.authenticate(&app.pool, &second).await.expect("lookup").is_some());
    sqlx::query("DELETE FROM api_key").execute(&app.pool).await.expect("delete");
    let deadline = Instant::now() + Duration::from_secs(20);
    while other.holds(&second) {
        assert!(Instant::now() < deadline, "the other instance kept the deleted key");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
}

#[tokio::test]
async fn workers_stop_cleanly_and_give_running_jobs_back() {
    let app = TestApp::spawn_with(|c| c.sandbox_latency = Duration::from_secs(30)).await;
    let user = app.create_user("stop@example.com", 100).await;
    let run_id = direct_run(&app, &user, "stop-1").await;
    let token = CancellationToken::new();
    let tasks = jobs::spawn_workers(
        app.pool.clone(),
        app.state.store.clone(),
        app.state.providers.clone(),
        fast_options(2),
        token.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs = jobs::for_run(&app.pool, run_id).await.expect("jobs");
        if jobs.iter().all(|j| j.status() == jobs::JobStatus::Running && j.progress.is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "jobs never started: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("stopped in time").expect("task");
    }
    let jobs = jobs::for_run(&app.pool, run_id).await.expect("jobs");
    assert!(jobs.iter().all(|j| j.status() == jobs::JobStatus::Queued), "released for another worker: {jobs:?}");
    assert_eq!(balance(&app, &user).await.held, 38, "still held, not settled");
}

#[tokio::test]
async fn live_streams_end_when_the_server_shuts_down() {
    let mut app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;
    let run_id = direct_run(&app, &user, "sse-stop").await;
    let mut events = app.get(&format!("/runs/{run_id}/events")).await;
    let first = tokio::time::timeout(Duration::from_secs(10), events.chunk()).await.expect("first event");
    assert!(String::from_utf8_lossy(&first.expect("chunk").expect("bytes")).contains("event: run"));
    // Graceful shutdown must not wait for the open stream.
    tokio::time::timeout(Duration::from_secs(10), app.stop()).await.expect("shutdown did not hang");
    let rest =
        tokio::time::timeout(Duration::from_secs(10), async { while let Ok(Some(_)) = events.chunk().await {} }).await;
    assert!(rest.is_ok(), "the stream ended");
}
