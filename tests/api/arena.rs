//! The arena: blind runs reveal nothing before the vote (page, live stream, images), votes are
//! refused where they must be (someone else's run, before delivery, after the change window),
//! sandbox votes stay off the public boards, the trust rules hold votes back, and the
//! background recompute ranks the models with the right counts.

use std::time::{Duration, Instant};

use faceoff::{
    arena::board,
    config::ArenaSettings,
    jobs::{self, WorkerOptions},
};
use reqwest::{StatusCode, multipart};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Browser, TestApp, location, wait_until_settled};

pub(crate) struct Workers(CancellationToken);

impl Drop for Workers {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub(crate) fn start_workers(app: &TestApp) -> Workers {
    let token = CancellationToken::new();
    jobs::spawn_workers(
        app.pool.clone(),
        app.state.store.clone(),
        app.state.providers.clone(),
        WorkerOptions {
            workers: 2,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(100),
            per_provider: 24,
            max_transient: 3,
            running_limits: jobs::RunningLimits::NONE,
        },
        token.clone(),
    );
    Workers(token)
}

fn settings() -> ArenaSettings {
    ArenaSettings { min_account_age: time::Duration::ZERO, min_votes: 2, bootstrap: 30, ..ArenaSettings::default() }
}

async fn arena_app() -> TestApp {
    TestApp::spawn_with(|c| c.arena = settings()).await
}

/// Submits a blind run from the studio form of `browser`.
async fn blind_run(browser: &Browser, models: &[&str], use_case: &str) -> Uuid {
    let (_, studio) = browser.page("/studio").await;
    let csrf = studio.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf");
    let key = studio.attr("input[name=idempotency_key]", "value").expect("key");
    let mut form = multipart::Form::new()
        .text("csrf_token", csrf)
        .text("idempotency_key", key)
        .text("prompt", "a candid portrait by a window")
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("seed", "7")
        .text("use_case", use_case.to_string())
        .text("blind", "on");
    for m in models {
        form = form.text("models", m.to_string());
    }
    let response = browser.post_multipart("/runs", form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap_or_default());
    location(&response).strip_prefix("/runs/").and_then(|id| id.parse().ok()).expect("run id")
}

/// The display letter ("A"…) of the job of `model` in a blind run.
async fn letter_of(app: &TestApp, run_id: Uuid, model: &str) -> String {
    let order: Vec<i16> = sqlx::query_scalar("SELECT shown_order FROM generation_run WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&app.pool)
        .await
        .expect("order");
    let position: i16 = sqlx::query_scalar("SELECT position FROM generation_job WHERE run_id = $1 AND model_slug = $2")
        .bind(run_id)
        .bind(model)
        .fetch_one(&app.pool)
        .await
        .expect("position");
    let index = order.iter().position(|p| *p == position).expect("shown");
    char::from(b'A' + index as u8).to_string()
}

/// Makes a settled run look as if real providers had made its images (the test has no real
/// provider): the settle-once trigger is lifted for the update only.
async fn as_real_provider(app: &TestApp, run_id: Uuid) {
    let mut tx = faceoff::db::begin(&app.pool).await.expect("begin");
    sqlx::query("ALTER TABLE generation_job DISABLE TRIGGER generation_job_settle_once")
        .execute(&mut *tx)
        .await
        .expect("disable");
    sqlx::query("UPDATE generation_job SET provider_impl = 'bfl' WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .expect("update");
    sqlx::query("ALTER TABLE generation_job ENABLE TRIGGER generation_job_settle_once")
        .execute(&mut *tx)
        .await
        .expect("enable");
    tx.commit().await.expect("commit");
}

pub(crate) async fn vote(browser: &Browser, run_id: Uuid, choice: &str) -> reqwest::Response {
    let token = browser.token("/studio", Some("/runs")).await;
    browser.post_raw(&format!("/runs/{run_id}/vote"), &[("choice", choice), ("csrf_token", &token)]).await
}

async fn votes_on(app: &TestApp, run_id: Uuid) -> Vec<(String, Option<i16>)> {
    sqlx::query_as("SELECT choice, winner FROM arena_vote WHERE run_id = $1")
        .bind(run_id)
        .fetch_all(&app.pool)
        .await
        .expect("votes")
}

#[tokio::test]
async fn blind_votes_are_counted_ranked_and_refused_where_they_must_be() {
    let app = arena_app().await;
    let owner = app.signed_in_user(10_000).await;
    let studio = app.page("/studio").await.1;
    assert!(studio.attr("input[name=blind]", "checked").is_some(), "blind is on by default");
    assert!(studio.count("select[name=use_case] option[value=portrait]") == 1);

    // Six real-provider portrait runs of Flux 2 against Flux Ultra 1.1, one sandbox run.
    let mut real = Vec::new();
    for _ in 0..6 {
        real.push(blind_run(&app.browser, &["flux-2", "flux-ultra-1-1"], "portrait").await);
    }
    let sandbox = blind_run(&app.browser, &["flux-2", "flux-ultra-1-1"], "portrait").await;

    // Before delivery: refused, nothing stored.
    let early = vote(&app.browser, real[0], "A").await;
    assert_eq!(early.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(votes_on(&app, real[0]).await.is_empty());

    let _workers = start_workers(&app);
    for run in real.iter().chain([&sandbox]) {
        wait_until_settled(&app.pool, *run).await;
    }
    for run in &real {
        as_real_provider(&app, *run).await;
    }
    let (_, page) = app.page(&format!("/runs/{}", real[0])).await;
    assert_eq!(page.text("[data-testid=use-case]").as_deref(), Some("Portrait"));
    assert_eq!(page.count("[data-testid=vote-form] input[name=choice]"), 4, "A, B, tie, both bad");

    // Someone else cannot vote on the owner's run.
    let other = app.create_user("stranger@example.com", 100).await;
    let stranger = app.browser();
    stranger.sign_in(&other).await;
    assert_eq!(vote(&stranger, real[0], "A").await.status(), StatusCode::NOT_FOUND);
    assert!(votes_on(&app, real[0]).await.is_empty());

    // Ultra wins five, Flux 2 one; the sandbox run's vote goes to the demo board only.
    for (i, run) in real.iter().enumerate() {
        let winner = if i == 5 { "flux-2" } else { "flux-ultra-1-1" };
        let letter = letter_of(&app, *run, winner).await;
        let response = vote(&app.browser, *run, &letter).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }
    let letter = letter_of(&app, sandbox, "flux-2").await;
    assert_eq!(vote(&app.browser, sandbox, &letter).await.status(), StatusCode::SEE_OTHER);

    // After the vote the names show; a second vote changes the first within the window...
    let (_, page) = app.page(&format!("/runs/{}", real[5])).await;
    assert!(page.source.contains("Flux Ultra 1.1") && page.source.contains("Flux 2"));
    assert!(page.text("[data-testid=vote-summary]").is_some_and(|t| t.contains("Flux 2")));
    let ultra = letter_of(&app, real[5], "flux-ultra-1-1").await;
    assert_eq!(vote(&app.browser, real[5], &ultra).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(votes_on(&app, real[5]).await.len(), 1, "one vote per run");
    let flux2 = letter_of(&app, real[5], "flux-2").await;
    assert_eq!(vote(&app.browser, real[5], &flux2).await.status(), StatusCode::SEE_OTHER);
    // ...and not after it.
    sqlx::query("UPDATE arena_vote SET locked_at = now() - interval '1 second' WHERE run_id = $1")
        .bind(real[5])
        .execute(&app.pool)
        .await
        .expect("lock");
    assert_eq!(vote(&app.browser, real[5], &ultra).await.status(), StatusCode::CONFLICT);
    let stored = votes_on(&app, real[5]).await;
    assert_eq!(stored.len(), 1);

    // Recompute (what the background task does) and read the boards.
    assert!(board::recompute(&app.pool, &app.state.catalog.current(), &settings()).await.expect("recompute"));
    let body: serde_json::Value = app.get("/api/v1/leaderboard/portrait").await.json().await.expect("leaderboard json");
    assert_eq!(body["counted_votes"], 6, "{body}");
    let entries = body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert!(entries[0]["entry"].as_str().is_some_and(|e| e.starts_with("flux-ultra-1-1:")), "{body}");
    assert_eq!(entries[0]["votes"], 6);
    assert_eq!(entries[0]["rank"], 1);
    assert!(entries[0]["rating"].as_f64() > entries[1]["rating"].as_f64());
    assert!(entries[0]["cost_per_win"].as_f64().is_some());
    let all: serde_json::Value = app.get("/api/v1/leaderboard").await.json().await.expect("all json");
    assert_eq!(all["counted_votes"], 6, "the sandbox vote is not on the public board");
    let demo: serde_json::Value = app.get("/api/v1/leaderboard/demo").await.json().await.expect("demo json");
    assert_eq!(demo["counted_votes"], 1);
    assert_eq!(app.get("/api/v1/leaderboard/nonsense").await.status(), StatusCode::NOT_FOUND);

    let (status, page) = app.page("/leaderboard/portrait").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("leaderboard");
    assert_eq!(page.text("[data-testid=counted]").as_deref(), Some("6"));
    // Six decisive two-way votes: the share Model A won, against 50% ± 40%.
    let first_won = body["first_won"].as_i64().expect("first_won");
    assert_eq!(body["decisive_votes"], 6);
    let check = page.text("[data-testid=position-check]").expect("position check");
    assert!(check.contains(&format!("won {:.0}% of 6 decisive", first_won as f64 * 100.0 / 6.0)), "{check}");
    let rows = page.attrs("[data-testid=board] tbody tr", "data-entry");
    assert!(rows[0].starts_with("flux-ultra-1-1:"), "{rows:?}");
    assert!(page.count("svg.chart circle") == 2);
    let (_, by_price) = app.page("/leaderboard/portrait?sort=price").await;
    // Flux Ultra 1.1 costs 16 credits, Flux 2 22: cheapest first, the sort named as current.
    assert_eq!(by_price.text("strong[aria-current]").as_deref(), Some("Price"));
    assert!(by_price.attrs("[data-testid=board] tbody tr", "data-entry")[0].starts_with("flux-ultra-1-1:"));
    let (_, by_votes) = app.page("/leaderboard/portrait?sort=votes").await;
    assert_eq!(by_votes.text("strong[aria-current]").as_deref(), Some("Votes"));
    let (_, demo_page) = app.page("/leaderboard/demo").await;
    assert!(demo_page.text("[data-testid=demo-board]").is_some());
    // The comparison page quotes the pair's record once it has enough votes (here 2).
    let (status, compare) = app.page("/compare/flux-2-vs-flux-ultra-1-1/portrait").await;
    assert_eq!(status, StatusCode::OK);
    let sentence = compare.text("[data-testid=community]").expect("community result");
    assert!(sentence.starts_with("In 6 blind portrait votes, Flux Ultra 1.1 won 83% (±"), "{sentence}");
    let (_, own) = app.page("/account/arena").await;
    assert_eq!(own.count("[data-testid=own-board] tbody tr"), 2);

    // Trust rules: a day-old minimum holds every vote back; a cap of 2 a day keeps two.
    let young = ArenaSettings { min_account_age: time::Duration::hours(24), ..settings() };
    let loaded = board::load_votes(&app.pool, &young).await.expect("votes");
    assert!(loaded.iter().all(|v| v.excluded.as_deref() == Some("account too young")));
    let capped = ArenaSettings { daily_cap: 2, ..settings() };
    let loaded = board::load_votes(&app.pool, &capped).await.expect("votes");
    assert_eq!(loaded.iter().filter(|v| !v.sandbox && v.excluded.is_none()).count(), 2);
    let _ = owner;
}

#[tokio::test]
async fn a_blind_run_page_and_its_stream_reveal_no_model_before_the_vote() {
    let app = arena_app().await;
    app.signed_in_user(1_000).await;
    let run_id = blind_run(&app.browser, &["flux-2", "flux-ultra-1-1"], "landscape").await;
    let jobs = jobs::for_run(&app.pool, run_id).await.expect("jobs");
    let prices: Vec<String> = jobs.iter().map(|j| format!("{} credits held", j.price)).collect();
    let secrets: Vec<String> = jobs
        .iter()
        .flat_map(|j| [j.model_slug.clone(), j.model_name.clone(), j.job_id.to_string(), j.variant_slug.clone()])
        .chain(["Flux".to_string(), "flux".to_string()])
        .collect();
    let assert_blind = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} gives {secret:?} away:\n{text}");
        }
        for price in &prices {
            assert!(!text.contains(price.as_str()), "{what} shows a per-model price {price:?}");
        }
    };

    let (status, page) = app.page(&format!("/runs/{run_id}")).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("blind run page");
    assert_blind("the pending page", &page.source);
    assert!(page.text("[data-testid=blind-notice]").is_some());
    assert_eq!(page.texts("figure[data-job] figcaption strong"), vec!["Model A", "Model B"]);

    // The stream, from pending to done.
    let events = app.get(&format!("/runs/{run_id}/events")).await;
    assert_eq!(events.status(), StatusCode::OK);
    let _workers = start_workers(&app);
    let mut events = events;
    let mut buffer = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(buffer.contains("event: done") && buffer.ends_with("\n\n")) {
        assert!(Instant::now() < deadline, "no done event: {buffer}");
        match tokio::time::timeout(Duration::from_secs(30), events.chunk())
            .await
            .expect("event in time")
            .expect("stream")
        {
            Some(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            None => break,
        }
    }
    assert_blind("the event stream", &buffer);
    for data in buffer.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let view: serde_json::Value = serde_json::from_str(data).expect("json");
        assert_eq!(view["revealed"], false);
        let statuses: Vec<&str> =
            view["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["status"].as_str()).collect();
        if view["status"] == "pending" {
            assert!(statuses.iter().all(|s| *s == statuses[0]), "pending jobs look alike: {statuses:?}");
        }
    }
    wait_until_settled(&app.pool, run_id).await;

    // Done: the images are neutral copies at addresses that name nothing.
    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    assert_blind("the finished page", &page.source);
    let images = page.attrs("figure[data-job] img", "src");
    assert_eq!(images, vec![format!("/runs/{run_id}/blind/a"), format!("/runs/{run_id}/blind/b")]);
    assert!(page.attrs("figure[data-job] img", "width").is_empty(), "no sizes");
    let mut sizes = Vec::new();
    for src in &images {
        let response = app.get(src).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        let bytes = response.bytes().await.expect("bytes");
        let img = image::load_from_memory(&bytes).expect("decodes");
        sizes.push((img.width(), img.height()));
    }
    assert_eq!(sizes[0], sizes[1], "the same size for every model");
    let (_, history) = app.page("/runs").await;
    assert_blind("the history", &history.source);
    let api: serde_json::Value = app
        .get(&format!("/runs/{run_id}/events"))
        .await
        .text()
        .await
        .map(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .next_back()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    assert_eq!(api["revealed"], false);

    // Skipping the vote reveals the names; a vote afterwards is kept but never counts.
    let token = app.browser.token(&format!("/runs/{run_id}"), Some(&format!("/runs/{run_id}/reveal"))).await;
    let response = app.browser.post_raw(&format!("/runs/{run_id}/reveal"), &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, page) = app.page(&format!("/runs/{run_id}")).await;
    assert!(page.source.contains("Flux Ultra 1.1"));
    assert_eq!(vote(&app.browser, run_id, "tie").await.status(), StatusCode::SEE_OTHER);
    let blind: bool = sqlx::query_scalar("SELECT blind FROM arena_vote WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&app.pool)
        .await
        .expect("vote");
    assert!(!blind);
}

#[tokio::test]
async fn failed_images_are_left_out_and_three_way_runs_pick_the_best_or_all_bad() {
    let app = TestApp::spawn_with(|c| {
        c.arena = settings();
        c.sandbox_fail = vec!["flux-2-max".into()];
    })
    .await;
    app.signed_in_user(10_000).await;
    let one_left = blind_run(&app.browser, &["flux-2", "flux-2-max"], "landscape").await;
    let two_left = blind_run(&app.browser, &["flux-2", "flux-ultra-1-1", "flux-2-max"], "landscape").await;
    let three = blind_run(&app.browser, &["flux-2", "flux-ultra-1-1", "flux-2-flex"], "other").await;
    let _workers = start_workers(&app);
    for run in [one_left, two_left, three] {
        wait_until_settled(&app.pool, run).await;
    }

    // One image delivered: nothing to vote on.
    let (_, page) = app.page(&format!("/runs/{one_left}")).await;
    assert_eq!(page.count("[data-testid=vote-form]"), 0);
    assert!(page.text("[data-testid=vote-note]").is_some_and(|t| t.contains("Fewer than two images")));
    assert_eq!(vote(&app.browser, one_left, "A").await.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Two of three delivered: a two-way vote between them; the failed one is no option.
    let (_, page) = app.page(&format!("/runs/{two_left}")).await;
    assert_eq!(page.count("[data-testid=vote-form] input[name=choice]"), 4);
    let failed = letter_of(&app, two_left, "flux-2-max").await;
    assert_eq!(vote(&app.browser, two_left, &failed).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(vote(&app.browser, two_left, "both_bad").await.status(), StatusCode::SEE_OTHER);
    let entries: Vec<String> = sqlx::query_scalar("SELECT entries FROM arena_vote WHERE run_id = $1")
        .bind(two_left)
        .fetch_one(&app.pool)
        .await
        .expect("entries");
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| !e.starts_with("flux-2-max:")), "{entries:?}");

    // Three delivered: pick the best, or all bad; no tie.
    let (_, page) = app.page(&format!("/runs/{three}")).await;
    assert_eq!(page.count("[data-testid=vote-form] input[name=choice]"), 4, "three bests and all bad");
    assert!(page.count("[data-testid=vote-form] input[value=tie]") == 0);
    assert_eq!(vote(&app.browser, three, "tie").await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let best = letter_of(&app, three, "flux-2-flex").await;
    assert_eq!(vote(&app.browser, three, &best).await.status(), StatusCode::SEE_OTHER);
    let stored = votes_on(&app, three).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, "best");

    // The recompute is due after new votes, not after it ran; the other board has the 3-way vote.
    assert!(board::due(&app.pool, &settings()).await.expect("due"));
    assert!(board::recompute(&app.pool, &app.state.catalog.current(), &settings()).await.expect("recompute"));
    assert!(!board::due(&app.pool, &settings()).await.expect("due"));
    let other: serde_json::Value = app.get("/api/v1/leaderboard/other").await.json().await.expect("json");
    assert_eq!(other["counted_votes"], 0, "sandbox votes stay off the public boards");
    let demo: serde_json::Value = app.get("/api/v1/leaderboard/demo").await.json().await.expect("json");
    assert_eq!(demo["counted_votes"], 2);
    let top = &demo["entries"][0];
    assert!(top["entry"].as_str().is_some_and(|e| e.starts_with("flux-2-flex:")), "{demo}");
    assert!(
        demo["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| !e["entry"].as_str().unwrap_or("").starts_with("flux-2-max:"))
    );
}

/// A webhook endpoint's `job.failed` would say which model of a blind run failed before the
/// vote: blind runs send none (their `run.completed` carries the masked view); a run that is not
/// blind still does.
#[tokio::test]
async fn a_blind_runs_failed_job_sends_no_webhook_event() {
    let app = TestApp::spawn_with(|c| {
        c.arena = settings();
        c.sandbox_fail = vec!["flux-2-max".into()];
        c.webhooks.allow_private = true;
    })
    .await;
    let user = app.signed_in_user(10_000).await;
    let input = faceoff::webhooks::EndpointInput {
        url: "http://127.0.0.1:9/hook".into(),
        description: String::new(),
        events: vec![faceoff::webhooks::EventType::JobFailed, faceoff::webhooks::EventType::RunCompleted],
        credits_low_threshold: 100,
    };
    faceoff::webhooks::create(&app.pool, user.id, &input.url, &input).await.expect("endpoint");
    let blind = blind_run(&app.browser, &["flux-2", "flux-2-max"], "landscape").await;
    let _workers = start_workers(&app);
    wait_until_settled(&app.pool, blind).await;
    let events = |run: Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT type FROM webhook_event WHERE run_id = $1 ORDER BY type")
                .bind(run)
                .fetch_all(&pool)
                .await
                .expect("events")
        }
    };
    assert_eq!(events(blind).await, vec!["run.completed".to_string()], "no job.failed for a blind run");

    // The same run, not blind: the failure is sent.
    let (_, studio) = app.browser.page("/studio").await;
    let csrf = studio.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf");
    let key = studio.attr("input[name=idempotency_key]", "value").expect("key");
    let form = multipart::Form::new()
        .text("csrf_token", csrf)
        .text("idempotency_key", key)
        .text("prompt", "a candid portrait by a window")
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("seed", "7")
        .text("use_case", "landscape")
        .text("models", "flux-2")
        .text("models", "flux-2-max");
    let response = app.browser.post_multipart("/runs", form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let open: Uuid = location(&response).strip_prefix("/runs/").and_then(|id| id.parse().ok()).expect("run id");
    wait_until_settled(&app.pool, open).await;
    assert_eq!(events(open).await, vec!["job.failed".to_string(), "run.completed".to_string()]);
}
