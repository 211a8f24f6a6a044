//! The fair queue: users take turns, studio runs go before bulk API work, per-user limits
//! (429, nothing created), the estimated wait on the run page, in the API and in the studio,
//! backpressure for the API (503) and the queue per provider route in `/metrics`.

use std::time::Duration;

use faceoff::{
    jobs::{self, RunningLimits},
    ledger,
    runs::create::{RunInput, create_run, validate},
};
use reqwest::{StatusCode, multipart};
use uuid::Uuid;

use crate::helpers::{Browser, Page, TEST_PASSWORD, TestApp, location, new_client};

/// Creates a personal API key with `browser` (signed in); returns it.
async fn api_key(browser: &Browser) -> String {
    let response = browser
        .submit(
            "/account/api-keys",
            "/account/api-keys",
            &[("action", "create"), ("name", "script"), ("password", TEST_PASSWORD)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    Page::from_response(response).await.text("[data-testid=new-api-key]").expect("key shown once")
}

fn two_models() -> RunInput {
    RunInput {
        prompt: "a queue of lanterns".into(),
        models: vec!["flux-2".into(), "flux-ultra-1-1".into()],
        mode: "2k".into(),
        aspect_ratio: "1:1".into(),
        seed: "7".into(),
        ..RunInput::default()
    }
}

/// A run of two jobs as the API makes it (through `create_run`, without HTTP).
async fn api_run(app: &TestApp, user: Uuid, key: &str) -> Uuid {
    let valid = validate(&app.state.catalog.current(), &two_models(), None).expect("valid");
    create_run(&app.pool, &app.state.store, &app.state.config.queue, user, &valid, key).await.expect("created").run_id
}

/// Submits the studio form with `browser` (two models).
async fn studio_run(browser: &Browser, prompt: &str) -> reqwest::Response {
    let (status, page) = browser.page("/studio?models=flux-2,flux-ultra-1-1").await;
    assert_eq!(status, StatusCode::OK);
    let form = multipart::Form::new()
        .text("csrf_token", page.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf"))
        .text("idempotency_key", page.attr("input[name=idempotency_key]", "value").expect("key"))
        .text("prompt", prompt.to_string())
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("seed", "")
        .text("models", "flux-2")
        .text("models", "flux-ultra-1-1");
    browser.post_multipart("/runs", form).await
}

fn run_id_from(response: &reqwest::Response) -> Uuid {
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "expected a redirect to the run");
    location(response).strip_prefix("/runs/").and_then(|id| id.parse().ok()).expect("a run id")
}

/// Claims the next job (no running limits) and returns its run.
async fn claim_run(app: &TestApp) -> Option<Uuid> {
    jobs::claim(&app.pool, Duration::from_secs(60), &[]).await.expect("claim").map(|job| job.run_id)
}

/// The queued jobs of `job_id`'s provider route claimed before it, counted exactly (no cap).
async fn jobs_ahead(app: &TestApp, job_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM generation_job g, generation_job j
         WHERE j.job_id = $1 AND g.status = 'queued' AND g.provider = j.provider
           AND (g.fair_slot, NOT g.interactive, g.job_id) < (j.fair_slot, NOT j.interactive, j.job_id)",
    )
    .bind(job_id)
    .fetch_one(&app.pool)
    .await
    .expect("count")
}

async fn counts(app: &TestApp) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM generation_run), (SELECT count(*) FROM generation_job), (SELECT count(*) FROM ledger_hold)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts")
}

#[tokio::test]
async fn a_user_with_200_queued_jobs_does_not_make_the_next_user_wait() {
    let app = TestApp::spawn().await;
    let a = app.create_user("heavy@example.com", 10_000).await;
    let b = app.create_user("light@example.com", 100).await;
    let mut a_runs = Vec::new();
    for i in 0..100 {
        a_runs.push(api_run(&app, a.id, &format!("a-{i}")).await);
    }
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM generation_job WHERE status = 'queued'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(queued, 200);
    // Workers are busy with A's work when B arrives.
    for _ in 0..3 {
        let run = claim_run(&app).await.expect("a job");
        assert!(a_runs.contains(&run));
    }
    let b_run = api_run(&app, b.id, "b-1").await;
    // FIFO would start B's jobs after A's 197 others; here both start within the next 4 claims.
    let mut next = Vec::new();
    for _ in 0..4 {
        next.push(claim_run(&app).await.expect("a job"));
    }
    assert_eq!(next.iter().filter(|r| **r == b_run).count(), 2, "B's two jobs in the next four claims: {next:?}");
    // And A is not starved: A's jobs keep coming.
    assert!(next.iter().any(|r| a_runs.contains(r)));
}

#[tokio::test]
async fn studio_runs_are_claimed_before_the_same_users_api_work() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(10_000).await;
    let mut api_runs = Vec::new();
    for i in 0..10 {
        api_runs.push(api_run(&app, user.id, &format!("bulk-{i}")).await);
    }
    assert!(api_runs.contains(&claim_run(&app).await.expect("a job")));
    let studio = run_id_from(&studio_run(&app.browser, "waiting on the page").await);
    let source: String = sqlx::query_scalar("SELECT source FROM generation_run WHERE run_id = $1")
        .bind(studio)
        .fetch_one(&app.pool)
        .await
        .expect("source");
    assert_eq!(source, "studio");
    assert_eq!(claim_run(&app).await, Some(studio), "the studio run's first job goes next");
    assert_eq!(claim_run(&app).await, Some(studio), "and its second");
    assert!(api_runs.contains(&claim_run(&app).await.expect("a job")), "then the bulk work again");
}

#[tokio::test]
async fn a_user_at_the_running_limit_waits_while_others_are_served() {
    let app = TestApp::spawn().await;
    let a = app.create_user("busy@example.com", 10_000).await;
    let b = app.create_user("other@example.com", 100).await;
    let first = api_run(&app, a.id, "a-1").await;
    let second = api_run(&app, a.id, "a-2").await;
    let b_run = api_run(&app, b.id, "b-1").await;
    let limits = RunningLimits { studio: 8, api: 1 };
    let claim = || async {
        jobs::claim_with(&app.pool, Duration::from_secs(60), &[], limits).await.expect("claim").map(|j| j.run_id)
    };
    assert_eq!(claim().await, Some(first));
    // A has one running: B's jobs go, A's wait.
    assert_eq!(claim().await, Some(b_run));
    assert_eq!(claim().await, None, "B is at the limit too; A's remaining jobs wait");
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generation_job WHERE status = 'queued' AND run_id = ANY($1)")
            .bind(vec![first, second])
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(waiting, 3);
}

#[tokio::test]
async fn over_the_per_user_limits_a_submission_is_429_and_creates_nothing() {
    let app = TestApp::spawn_with(|config| {
        config.queue.api.max_queued = 4;
        config.queue.studio.max_queued = 2;
    })
    .await;
    let user = app.signed_in_user(1_000).await;
    let key = api_key(&app.browser).await;
    let (api, _) = new_client();
    let body = serde_json::json!({"prompt": "one more", "models": ["flux-2", "flux-ultra-1-1"]});
    let post = |idem: String| {
        api.post(app.url("/api/v1/runs")).bearer_auth(&key).header("Idempotency-Key", idem).json(&body).send()
    };

    for i in 0..2 {
        assert_eq!(post(format!("ok-{i}")).await.expect("POST").status(), StatusCode::CREATED);
    }
    let before = (counts(&app).await, ledger::balance(&app.pool, user.id).await.expect("balance"));
    let refused = post("over".into()).await.expect("POST");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"].to_str().expect("text").parse().expect("seconds");
    assert!(retry >= 1);
    let error: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "rate_limited");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(message.contains("4 jobs waiting") && message.contains("at most 4"), "{message}");
    assert_eq!((counts(&app).await, ledger::balance(&app.pool, user.id).await.expect("balance")), before);

    // The studio has its own limit: one run of two jobs fits, the next does not.
    let ok = studio_run(&app.browser, "in the studio").await;
    run_id_from(&ok);
    let before = (counts(&app).await, ledger::balance(&app.pool, user.id).await.expect("balance"));
    let refused = studio_run(&app.browser, "one too many").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let page = Page::from_response(refused).await;
    let message = page.text("[data-testid=form-error]").expect("message");
    assert!(message.contains("at most 2 may wait"), "{message}");
    assert_eq!(page.text("textarea[name=prompt]").as_deref(), Some("one too many"), "the form is kept");
    assert_eq!((counts(&app).await, ledger::balance(&app.pool, user.id).await.expect("balance")), before);

    // Concurrent submissions cannot pass the limit together: a fresh user, limit 4, six at once.
    let other = app.create_user("racer@example.com", 1_000).await;
    let valid = validate(&app.state.catalog.current(), &two_models(), None).expect("valid");
    let attempts = (0..6).map(|i| {
        let (pool, store, queue, valid) =
            (app.pool.clone(), app.state.store.clone(), app.state.config.queue, valid.clone());
        tokio::spawn(async move { create_run(&pool, &store, &queue, other.id, &valid, &format!("race-{i}")).await })
    });
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(_) => created += 1,
            Err(faceoff::runs::CreateError::TooManyJobs { .. }) => {}
            Err(err) => panic!("unexpected {err}"),
        }
    }
    assert_eq!(created, 2);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM generation_job WHERE user_id = $1")
        .bind(other.id)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(queued, 4);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_run_page_the_api_and_the_studio_show_the_wait() {
    let app = TestApp::spawn().await;
    let heavy = app.create_user("heavy@example.com", 10_000).await;
    for i in 0..20 {
        api_run(&app, heavy.id, &format!("h-{i}")).await;
    }
    // Some jobs started recently: the route has a throughput to estimate from.
    for _ in 0..4 {
        claim_run(&app).await.expect("a job");
    }
    let user = app.signed_in_user(1_000).await;
    let key = api_key(&app.browser).await;
    let (_, studio) = app.page("/studio").await;
    let wait = studio.text("[data-testid=studio-wait]").expect("the studio shows the wait");
    assert!(wait.starts_with("Current wait:"), "{wait}");

    let (api, _) = new_client();
    let created = api
        .post(app.url("/api/v1/runs"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"prompt": "how long?", "models": ["flux-2", "flux-ultra-1-1"]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), StatusCode::CREATED);
    let run: serde_json::Value = created.json().await.expect("json");
    let id = run["id"].as_str().expect("id").to_string();
    for job in run["jobs"].as_array().expect("jobs") {
        let queue = &job["queue"];
        let ahead = queue["ahead"].as_i64().expect("ahead");
        assert!(ahead > 0 && ahead < 36, "placed fairly, not behind all 36: {queue}");
        assert!(queue["estimated_start_seconds"].as_u64().is_some(), "{queue}");
        let label = queue["label"].as_str().expect("label");
        assert!(label.contains(" ahead, about ") && label.ends_with("before it starts"), "{label}");
        // The place is exact: the queued jobs of the route claimed before this one.
        let job_id: uuid::Uuid = job["id"].as_str().and_then(|s| s.parse().ok()).expect("job id");
        let counted = jobs_ahead(&app, job_id).await;
        assert_eq!(ahead, counted, "{queue}");
    }
    let polled: serde_json::Value = api
        .get(app.url(&format!("/api/v1/runs/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert!(polled["jobs"][0]["queue"]["ahead"].is_i64());

    let (_, page) = app.page(&format!("/runs/{id}")).await;
    page.assert_well_formed("run page");
    let waits = page.texts("[data-testid=wait]");
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert!(waits.iter().all(|w| w.starts_with("Queued:") && w.contains("before it starts")), "{waits:?}");
    let summary = page.text("[data-role=summary]").expect("summary");
    assert!(summary.starts_with("Waiting in the queue…"), "{summary}");

    // The live stream carries it too.
    let mut stream = app.get(&format!("/runs/{id}/events")).await;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await.expect("event").expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk.expect("data")));
    }
    assert!(text.contains("\"queue\":{\"ahead\":"), "{text}");

    // Once the job runs, the wait is gone.
    let _ = user;
    while let Some(run) = claim_run(&app).await {
        if run.to_string() == id {
            break;
        }
    }
    let polled: serde_json::Value = api
        .get(app.url(&format!("/api/v1/runs/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert!(polled["jobs"].as_array().expect("jobs").iter().any(|j| j["queue"].is_null()));
}

#[tokio::test]
async fn a_place_past_100_jobs_ahead_is_estimated_from_the_first_100() {
    let app = TestApp::spawn().await;
    // Two users with 260 queued jobs each (slots 0..259): the next job of either is behind 520.
    let (a, b) = (app.create_user("a@example.com", 100_000).await, app.create_user("b@example.com", 100_000).await);
    for i in 0..130 {
        api_run(&app, a.id, &format!("a-{i}")).await;
        api_run(&app, b.id, &format!("b-{i}")).await;
    }
    let valid = validate(&app.state.catalog.current(), &two_models(), None).expect("valid");
    let created = create_run(&app.pool, &app.state.store, &app.state.config.queue, a.id, &valid, "a-last")
        .await
        .expect("created");
    let places = created.fresh.expect("a new run").places;
    assert_eq!(places.len(), 2, "{places:?}");
    for (job_id, wait) in &places {
        // Counted exactly only up to 100; the estimate is within 5% of the exact count.
        let exact = jobs_ahead(&app, *job_id).await;
        assert!((520..=521).contains(&exact), "{exact}");
        assert!((wait.ahead - exact).abs() * 20 <= exact, "estimated {} for {exact}: {wait:?}", wait.ahead);
        assert!(wait.label.starts_with("around 520 jobs ahead"), "{wait:?}");
    }
    // Below 100 a place is exact: a third user's first job waits only for the head of the queue.
    let c = app.create_user("c@example.com", 100_000).await;
    let created = create_run(&app.pool, &app.state.store, &app.state.config.queue, c.id, &valid, "c-first")
        .await
        .expect("created");
    for (job_id, wait) in &created.fresh.expect("a new run").places {
        assert_eq!(wait.ahead, jobs_ahead(&app, *job_id).await, "{wait:?}");
        assert!(wait.ahead < jobs::queue::MAX_COUNTED, "{wait:?}");
    }
}

#[tokio::test]
async fn a_backed_up_queue_refuses_api_runs_with_503_while_the_studio_works() {
    let app = TestApp::spawn_with(|config| config.queue.max_age = Some(Duration::from_secs(60))).await;
    let other = app.create_user("earlier@example.com", 1_000).await;
    api_run(&app, other.id, "old").await;
    sqlx::query("UPDATE generation_job SET created_at = now() - interval '2 minutes'")
        .execute(&app.pool)
        .await
        .expect("age the queue");
    let user = app.signed_in_user(1_000).await;
    let key = api_key(&app.browser).await;
    let before = (counts(&app).await, ledger::balance(&app.pool, user.id).await.expect("balance"));
    let (api, _) = new_client();
    let refused = api
        .post(app.url("/api/v1/runs"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"prompt": "bulk", "models": ["flux-2", "flux-ultra-1-1"]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "30");
    let error: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "unavailable");
    assert!(error["error"]["message"].as_str().expect("message").contains("backed up"), "{error}");
    assert_eq!((counts(&app).await, ledger::balance(&app.pool, user.id).await.expect("balance")), before);
    // A person in the studio still gets their run.
    run_id_from(&studio_run(&app.browser, "still works").await);

    // `/metrics` shows the queue per provider route.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = faceoff::app::metrics_router(app.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("GET").text().await.expect("metrics");
    assert!(metrics.contains("jobs_queued_by_route{route=\"bfl\"}"), "{metrics}");
    assert!(metrics.contains("jobs_queued_oldest_age_seconds_by_route{route=\"bfl\"}"), "{metrics}");
}

/// A claim hands over every job it takes, with its run. The claim statement's snapshot is taken
/// when it starts; the function inside it claims with a newer one. Here a run is committed in
/// between: the statement sleeps before the function runs, and a test trigger dates the jobs'
/// `run_after` back, as for a creation that began before the claim (its jobs are due at once).
/// The claim used to join the function's row with `generation_run` outside the function, where
/// the run was not visible yet: the job was claimed, the answer was empty, and the job stayed
/// `running` with no worker until its lease expired (CI saw runs whose first job never moved).
#[tokio::test]
async fn a_claim_hands_over_every_job_it_takes_with_its_run() {
    let app = TestApp::spawn().await;
    let user = app.create_user("racer@example.com", 1_000).await;
    for sql in [
        "CREATE FUNCTION test_due_already() RETURNS trigger AS $$
         BEGIN NEW.run_after := now() - interval '1 minute'; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER test_due_already BEFORE INSERT ON generation_job
         FOR EACH ROW EXECUTE FUNCTION test_due_already()",
    ] {
        sqlx::query(sql).execute(&app.pool).await.expect("test trigger");
    }
    let pool = app.pool.clone();
    let claim = tokio::spawn(async move {
        // The app's own claim statement, started one second before it runs.
        let sql = format!("SELECT c.* FROM (SELECT pg_sleep(1) OFFSET 0) s, LATERAL ({}) c", jobs::CLAIM_SQL);
        sqlx::query_as::<_, jobs::ClaimedJob>(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::new_v4())
            .bind(60.0f64)
            .bind(Vec::<String>::new())
            .bind(i64::from(u32::MAX))
            .bind(i64::from(u32::MAX))
            .bind(100i64)
            .fetch_all(&pool)
            .await
            .expect("claim")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run_id = api_run(&app, user.id, "during-the-claim").await;
    let handed = claim.await.expect("claim task");
    let running: Vec<Uuid> = sqlx::query_scalar("SELECT job_id FROM generation_job WHERE status = 'running'")
        .fetch_all(&app.pool)
        .await
        .expect("running jobs");
    assert_eq!(running.len(), 1, "the claim took the first job of the run committed during it");
    assert_eq!(handed.iter().map(|j| j.job_id).collect::<Vec<_>>(), running, "and handed it over");
    assert_eq!((handed[0].run_id, handed[0].prompt.as_str()), (run_id, "a queue of lanterns"), "with its run");
}

#[tokio::test]
async fn a_claim_reads_only_its_window_when_every_user_in_it_is_at_the_limit() {
    let app = TestApp::spawn().await;
    let heavy = app.create_user("batch@example.com", 100_000).await;
    for i in 0..100 {
        api_run(&app, heavy.id, &format!("batch-{i}")).await;
    }
    let limits = RunningLimits { studio: 8, api: 1 };
    let first = jobs::claim_with(&app.pool, Duration::from_secs(60), &[], limits).await.expect("claim");
    assert!(first.is_some(), "the first job goes");
    // 199 jobs queued, all of one user who is at the limit: nothing can go. The claim must
    // answer that from its window of the fair index, not by reading the whole queue (which it
    // did at every idle worker's poll).
    // Index entries read from the fair index, from this connection's pending statistics: they
    // hold its earlier transactions too until they are flushed, so the claim's own is the
    // difference within one transaction (no flush happens inside one).
    let fair_index_read = "SELECT pg_stat_get_xact_tuples_returned('generation_job_fair_idx'::regclass)";
    let mut tx = faceoff::db::begin(&app.pool).await.expect("begin");
    let before: i64 = sqlx::query_scalar(fair_index_read).fetch_one(&mut *tx).await.expect("statistics");
    let claimed: Vec<Uuid> = sqlx::query_scalar("SELECT job_id FROM faceoff_claim_job($1, 60, '{}', $2, $3, $4)")
        .bind(Uuid::new_v4())
        .bind(i64::from(limits.studio))
        .bind(i64::from(limits.api))
        .bind(jobs::queue::CLAIM_WINDOW)
        .fetch_all(&mut *tx)
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "the user is at the limit: {claimed:?}");
    let after: i64 = sqlx::query_scalar(fair_index_read).fetch_one(&mut *tx).await.expect("statistics");
    let read = after - before;
    tx.rollback().await.expect("rollback");
    // The window, and maybe an entry past it (33 here); the whole queue is 199.
    assert!(
        read <= 2 * jobs::queue::CLAIM_WINDOW,
        "the claim read {read} entries of the fair index; its window is {}",
        jobs::queue::CLAIM_WINDOW
    );
    assert!(read > 0, "the claim reads the window through the fair index");
}
