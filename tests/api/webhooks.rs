//! Webhooks (issue 17): deliveries signed with the documented algorithm, written in the
//! transaction of their cause and never able to fail it, retried after 500s and timeouts on the
//! backoff schedule (an injected clock: no real waiting), replayed, signed with both secrets
//! during a rotation's overlap, and never sent to a private address unless configured; the
//! account page; and the API's rate limits and cursors.

use std::time::Duration;

use faceoff::{
    payments::webhook::verify,
    webhooks::{self, Deliverer, EndpointInput, EventType, next_delay},
};
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::{
    helpers::{Page, TestApp, TestUser},
    openapi::{errors, standalone},
};

async fn webhook_app() -> TestApp {
    TestApp::spawn_with(|c| {
        // The receivers are mock servers on 127.0.0.1.
        c.webhooks.allow_private = true;
        c.webhooks.timeout = Duration::from_millis(400);
        c.sandbox_fail = vec!["flux-ultra-1-1".into()];
    })
    .await
}

async fn key(app: &TestApp, user: &TestUser) -> String {
    faceoff::accounts::api_keys::create(&app.pool, user.id, "webhooks").await.expect("key")
}

fn deliverer(app: &TestApp) -> Deliverer {
    Deliverer::new(app.pool.clone(), app.state.config.webhooks).expect("deliverer")
}

/// The documented check, written out: HMAC-SHA256 keyed with the secret over "{t}.{body}", hex.
fn documented_signature(secret: &str, t: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `t` and every `v1` of a `Faceoff-Signature` header.
fn signature_parts(header: &str) -> (String, Vec<String>) {
    let mut t = String::new();
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.to_string(),
            Some(("v1", value)) => v1.push(value.to_string()),
            _ => panic!("unexpected part {part}"),
        }
    }
    (t, v1)
}

fn header(request: &wiremock::Request, name: &str) -> String {
    request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn start_workers(app: &TestApp) -> CancellationToken {
    let token = CancellationToken::new();
    faceoff::jobs::spawn_workers(
        app.pool.clone(),
        app.state.store.clone(),
        app.state.providers.clone(),
        faceoff::jobs::WorkerOptions {
            workers: 2,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(50),
            per_provider: 8,
            max_transient: 1,
            running_limits: faceoff::jobs::RunningLimits::NONE,
        },
        token.clone(),
    );
    token
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&app.pool).await.expect("count")
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deliveries_are_signed_with_the_documented_algorithm_and_written_with_their_cause() {
    let app = webhook_app().await;
    let user = app.create_user("hooks@example.com", 100).await;
    let key = key(&app, &user).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&receiver)
        .await;
    let api = reqwest::Client::new();

    let created = api
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": format!("{}/hook", receiver.uri()), "events": ["run.completed", "job.failed", "credits.low"], "credits_low_threshold": 90}))
        .send()
        .await
        .expect("register");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    let secret = created["secret"].as_str().expect("the secret, once").to_string();
    assert!(secret.starts_with("whsec_"));
    let listed: Value =
        api.get(app.url("/api/v1/webhooks")).bearer_auth(&key).send().await.expect("list").json().await.expect("json");
    assert!(listed["data"][0].get("secret").is_none(), "never shown again");
    assert!(secret.starts_with(listed["data"][0]["secret_hint"].as_str().expect("hint").trim_end_matches('…')));

    // A run of two models, one of which fails: 38 of 100 credits reserved (below 90).
    let run: Value = api
        .post(app.url("/api/v1/runs"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "a harbour at dawn", "models": ["flux-2", "flux-ultra-1-1"]}))
        .send()
        .await
        .expect("run")
        .json()
        .await
        .expect("json");
    let run_id: Uuid = run["id"].as_str().expect("id").parse().expect("uuid");
    // credits.low was written with the run, in its transaction.
    assert_eq!(count(&app, "SELECT count(*) FROM webhook_event WHERE type = 'credits.low'").await, 1);

    let workers = start_workers(&app).await;
    wait_for("the run to settle", async || {
        count(&app, "SELECT count(*) FROM generation_job WHERE status IN ('queued', 'running')").await == 0
    })
    .await;
    workers.cancel();
    // Written with the settlements, before anything was sent.
    assert_eq!(count(&app, "SELECT count(*) FROM webhook_event").await, 3);
    assert_eq!(count(&app, "SELECT count(*) FROM webhook_delivery WHERE status = 'pending' AND attempts = 0").await, 3);
    assert!(receiver.received_requests().await.expect("requests").is_empty());

    let now = OffsetDateTime::now_utc();
    assert_eq!(deliverer(&app).run_due(now).await.expect("deliver"), 3);
    let requests = receiver.received_requests().await.expect("requests");
    assert_eq!(requests.len(), 3);
    let doc = faceoff::app::docs::document();
    let mut types = Vec::new();
    for request in &requests {
        let signature = header(request, "faceoff-signature");
        let (t, v1) = signature_parts(&signature);
        assert_eq!(t, now.unix_timestamp().to_string());
        assert_eq!(v1, vec![documented_signature(&secret, &t, &request.body)], "one secret, one v1");
        // Stripe's verification (the one the app applies to Stripe's own events) agrees.
        assert_eq!(verify(&secret, Some(&signature), &request.body, now.unix_timestamp() + 60), Ok(()));
        assert!(verify("whsec_other", Some(&signature), &request.body, now.unix_timestamp()).is_err());
        assert!(verify(&secret, Some(&signature), b"{\"tampered\":1}", now.unix_timestamp()).is_err());
        assert_eq!(header(request, "content-type"), "application/json");
        let body: Value = serde_json::from_slice(&request.body).expect("json body");
        assert_eq!(header(request, "faceoff-event-type"), body["type"].as_str().expect("type"));
        assert_eq!(header(request, "faceoff-delivery-attempt"), "1");
        // The body is what the document's `webhooks` section says.
        let schema_name = match body["type"].as_str() {
            Some("run.completed") => "RunCompletedEvent",
            Some("job.failed") => "JobFailedEvent",
            Some("credits.low") => "CreditsLowEvent",
            other => panic!("unexpected event {other:?}"),
        };
        let found = errors(&standalone(doc, &json!({"$ref": format!("#/components/schemas/{schema_name}")})), &body);
        assert!(found.is_empty(), "{schema_name}: {found:?}\n{body}");
        types.push(body["type"].as_str().unwrap_or_default().to_string());
        match body["type"].as_str() {
            Some("run.completed") => {
                assert_eq!(body["data"]["run"]["id"], run_id.to_string());
                assert_eq!(body["data"]["run"]["status"], "done");
                assert_eq!(body["data"]["run"]["charged"], 22, "only the delivered image");
            }
            Some("job.failed") => {
                assert_eq!(body["data"]["job"]["model"], "flux-ultra-1-1");
                assert_eq!(body["data"]["job"]["status"], "failed");
                assert_eq!(body["data"]["job"]["charged"], 0);
            }
            _ => assert_eq!(body["data"]["available"], 62),
        }
    }
    types.sort();
    assert_eq!(types, ["credits.low", "job.failed", "run.completed"]);
    // Recorded with the answer.
    assert_eq!(
        count(&app, "SELECT count(*) FROM webhook_delivery WHERE status = 'succeeded' AND last_status_code = 200")
            .await,
        3
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM webhook_attempt WHERE status_code = 200 AND response_excerpt = 'ok'").await,
        3
    );
    // Nothing is due any more.
    assert_eq!(deliverer(&app).run_due(now + time::Duration::days(2)).await.expect("deliver"), 0);
    app.assert_invariants().await;
}

/// An endpoint of `user` subscribed to `credits.low` (threshold 50) and one event for it.
async fn endpoint_with_a_delivery(app: &TestApp, user: &TestUser, url: &str) -> (webhooks::Endpoint, Uuid) {
    let input = EndpointInput {
        url: url.to_string(),
        description: String::new(),
        events: vec![EventType::CreditsLow],
        credits_low_threshold: 50,
    };
    let endpoint = webhooks::create(&app.pool, user.id, url, &input).await.expect("endpoint");
    let delivery = queue_event(app, user).await;
    (endpoint, delivery)
}

/// A `credits.low` event for `user` (100 → 10 credits) through the outbox; its delivery's id.
async fn queue_event(app: &TestApp, user: &TestUser) -> Uuid {
    let mut tx = faceoff::db::begin(&app.pool).await.expect("begin");
    webhooks::outbox::credits_spent(&mut tx, user.id, 100, 10).await;
    tx.commit().await.expect("commit");
    sqlx::query_scalar("SELECT delivery_id FROM webhook_delivery ORDER BY created_at DESC, delivery_id LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("a delivery")
}

#[derive(Debug, sqlx::FromRow)]
struct DeliveryState {
    status: String,
    attempts: i32,
    next_attempt_at: OffsetDateTime,
    created_at: OffsetDateTime,
}

async fn delivery(app: &TestApp, id: Uuid) -> DeliveryState {
    sqlx::query_as("SELECT status, attempts, next_attempt_at, created_at FROM webhook_delivery WHERE delivery_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("delivery")
}

#[tokio::test]
async fn failures_are_retried_with_exponential_backoff_for_a_day_then_replayed() {
    let app = webhook_app().await;
    let user = app.create_user("retry@example.com", 100).await;
    let receiver = MockServer::start().await;
    // 500 twice, then no answer in time (the timeout is 400 ms), then 500 for ever.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&receiver)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).with_priority(3).mount(&receiver).await;
    let (_, id) = endpoint_with_a_delivery(&app, &user, &format!("{}/hook", receiver.uri())).await;
    let deliverer = deliverer(&app);

    // The clock is injected: each attempt runs at the moment it is due, and not a second before.
    let created = delivery(&app, id).await.created_at;
    let mut now = created;
    let mut gaps = Vec::new();
    loop {
        let state = delivery(&app, id).await;
        if state.status != "pending" {
            break;
        }
        if state.attempts > 0 {
            gaps.push((state.next_attempt_at - now).whole_seconds());
            assert_eq!(
                deliverer.run_due(state.next_attempt_at - time::Duration::seconds(1)).await.expect("early"),
                0,
                "not due yet"
            );
        }
        now = state.next_attempt_at.max(now);
        assert_eq!(deliverer.run_due(now).await.expect("attempt"), 1);
        assert!(state.attempts < 20, "never gives up");
    }
    let expected: Vec<i64> = (1..=12).map(|n| next_delay(n).as_secs() as i64).collect();
    assert_eq!(gaps, expected, "30 s, 1 min, 2 min … doubling, at most 6 h");
    assert_eq!(expected, [30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600]);
    let state = delivery(&app, id).await;
    assert_eq!((state.status.as_str(), state.attempts), ("failed", 13));
    assert!(
        now - created <= time::Duration::hours(24) && now - created > time::Duration::hours(20),
        "{}",
        now - created
    );

    #[derive(sqlx::FromRow, Debug)]
    struct Attempt {
        attempt: i32,
        status_code: Option<i32>,
        error: Option<String>,
    }
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT attempt, status_code, error FROM webhook_attempt WHERE delivery_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("attempts");
    assert_eq!(attempts.len(), 13);
    assert_eq!((attempts[0].status_code, attempts[1].status_code), (Some(500), Some(500)));
    assert_eq!((attempts[2].status_code, attempts[2].error.as_deref()), (None, Some("timed out")), "{:?}", attempts[2]);
    assert!(
        attempts[3..]
            .iter()
            .all(|a| a.status_code == Some(503) && a.error.as_deref() == Some("the endpoint answered 503"))
    );
    assert_eq!(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), (1..=13).collect::<Vec<_>>());

    // The owner sees it on the account page, and replays it from there.
    receiver.reset().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&receiver).await;
    app.browser.sign_in(&user).await;
    let (_, page) = app.page("/account/webhooks").await;
    page.assert_well_formed("webhooks");
    assert_eq!(page.count("[data-testid=webhook-delivery]"), 1);
    assert!(
        page.text("[data-testid=webhook-delivery]")
            .is_some_and(|t| t.contains("failed") && t.contains("503") && t.contains("13"))
    );
    let endpoint_id = page.attr("input[name=endpoint_id]", "value").expect("endpoint");
    let replayed = app
        .browser
        .submit(
            "/account/webhooks",
            "/account/webhooks",
            &[("action", "replay"), ("endpoint_id", &endpoint_id), ("delivery_id", &id.to_string())],
        )
        .await;
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    let replay: Uuid = sqlx::query_scalar("SELECT delivery_id FROM webhook_delivery WHERE replay_of = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("a new delivery");
    assert_eq!(deliverer.run_due(OffsetDateTime::now_utc()).await.expect("replay"), 1);
    assert_eq!(delivery(&app, replay).await.status, "succeeded");
    assert_eq!(delivery(&app, id).await.status, "failed", "the original stays as it was");
    // The same event, the same bytes (the receiver can deduplicate on the id).
    let sent = receiver.received_requests().await.expect("requests");
    let first_body: String =
        sqlx::query_scalar("SELECT payload::text FROM webhook_event").fetch_one(&app.pool).await.expect("payload");
    assert_eq!(String::from_utf8_lossy(&sent[0].body), first_body);
    let (_, page) = app.page("/account/webhooks").await;
    assert_eq!(page.count("[data-testid=webhook-delivery]"), 2);
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_during_the_overlap() {
    let app = webhook_app().await;
    let user = app.create_user("rotate@example.com", 100).await;
    let key = key(&app, &user).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let api = reqwest::Client::new();
    let created: Value = api
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&key)
        .json(
            &json!({"url": format!("{}/hook", receiver.uri()), "events": ["credits.low"], "credits_low_threshold": 50}),
        )
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let (id, old) =
        (created["id"].as_str().expect("id").to_string(), created["secret"].as_str().expect("secret").to_string());
    let rotated = api
        .post(app.url(&format!("/api/v1/webhooks/{id}/rotate-secret")))
        .bearer_auth(&key)
        .json(&json!({"overlap_seconds": 3600}))
        .send()
        .await
        .expect("rotate");
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.expect("json");
    let new = rotated["secret"].as_str().expect("new secret").to_string();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());

    // During the overlap: two v1, one per secret; a receiver still on the old secret accepts it,
    // and so does one already on the new.
    queue_event(&app, &user).await;
    let now = OffsetDateTime::now_utc();
    deliverer(&app).run_due(now).await.expect("deliver");
    let requests = receiver.received_requests().await.expect("requests");
    let signature = header(&requests[0], "faceoff-signature");
    let (t, v1) = signature_parts(&signature);
    assert_eq!(
        v1,
        vec![documented_signature(&new, &t, &requests[0].body), documented_signature(&old, &t, &requests[0].body)]
    );
    for secret in [&old, &new] {
        assert_eq!(verify(secret, Some(&signature), &requests[0].body, now.unix_timestamp()), Ok(()));
    }

    // After the overlap only the new secret signs.
    queue_event(&app, &user).await;
    let later = now + time::Duration::hours(2);
    deliverer(&app).run_due(later).await.expect("deliver");
    let requests = receiver.received_requests().await.expect("requests");
    let signature = header(&requests[1], "faceoff-signature");
    assert_eq!(signature_parts(&signature).1.len(), 1);
    assert_eq!(verify(&new, Some(&signature), &requests[1].body, later.unix_timestamp()), Ok(()));
    assert!(verify(&old, Some(&signature), &requests[1].body, later.unix_timestamp()).is_err());

    // overlap_seconds 0 retires the old secret at once; out of range is a 422.
    let bad = api
        .post(app.url(&format!("/api/v1/webhooks/{id}/rotate-secret")))
        .bearer_auth(&key)
        .json(&json!({"overlap_seconds": 999999999}))
        .send()
        .await
        .expect("rotate");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let at_once: Value = api
        .post(app.url(&format!("/api/v1/webhooks/{id}/rotate-secret")))
        .bearer_auth(&key)
        .json(&json!({"overlap_seconds": 0}))
        .send()
        .await
        .expect("rotate")
        .json()
        .await
        .expect("json");
    assert!(at_once["previous_secret_expires_at"].is_null());
}

#[tokio::test]
async fn private_addresses_are_refused_unless_configured() {
    // Production settings: https only, public addresses only.
    let app = TestApp::spawn().await;
    assert!(!app.state.config.webhooks.allow_private);
    let user = app.create_user("ssrf@example.com", 100).await;
    let key = key(&app, &user).await;
    let api = reqwest::Client::new();
    for (url, says) in [
        ("http://203.0.113.10/hook", "https"),
        ("https://127.0.0.1/hook", "private"),
        ("https://localhost:8443/hook", "private"),
        ("https://10.0.0.7/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://[::1]/hook", "private"),
        ("https://[fd00::1]/hook", "private"),
        ("https://[::ffff:127.0.0.1]/hook", "private"),
        ("https://metadata.google.internal/x", "private"),
        ("https://user:pw@203.0.113.10/hook", "user name"),
        ("file:///etc/passwd", "https"),
    ] {
        let response = api
            .post(app.url("/api/v1/webhooks"))
            .bearer_auth(&key)
            .json(&json!({"url": url, "events": ["run.completed"]}))
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_input");
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| m.contains("url") && m.contains(says)),
            "{url}: {body}"
        );
    }
    assert_eq!(count(&app, "SELECT count(*) FROM webhook_endpoint").await, 0);

    // An endpoint that points inside (registered while allowed, or its name now resolves there)
    // is refused at delivery time, before any connection: the receiver hears nothing.
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let port = receiver.address().port();
    for url in [format!("https://127.0.0.1:{port}/hook"), format!("http://localhost:{port}/hook")] {
        let (_, id) = endpoint_with_a_delivery(&app, &user, &url).await;
        assert_eq!(deliverer(&app).run_due(OffsetDateTime::now_utc()).await.expect("attempt"), 1);
        let error: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM webhook_delivery WHERE delivery_id = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .expect("error");
        assert!(error.as_deref().is_some_and(|e| e.starts_with("refused")), "{url}: {error:?}");
        sqlx::query("DELETE FROM webhook_endpoint").execute(&app.pool).await.expect("clean up");
    }
    assert!(receiver.received_requests().await.expect("requests").is_empty(), "no request reached the private address");

    // The HTTP client's resolver refuses internal names too (no DNS query is sent for them).
    use reqwest::dns::Resolve;
    let refused = faceoff::webhooks::ssrf::PublicOnly.resolve("localhost".parse().expect("name")).await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn a_broken_outbox_never_fails_a_settlement() {
    let app = webhook_app().await;
    let user = app.create_user("outbox@example.com", 100).await;
    let key = key(&app, &user).await;
    let input = EndpointInput {
        url: "http://127.0.0.1:9/hook".into(),
        description: String::new(),
        events: EventType::ALL.to_vec(),
        credits_low_threshold: 90,
    };
    webhooks::create(&app.pool, user.id, "http://127.0.0.1:9/hook", &input).await.expect("endpoint");
    // Every outbox write fails from now on.
    sqlx::query("ALTER TABLE webhook_delivery RENAME TO webhook_delivery_elsewhere")
        .execute(&app.pool)
        .await
        .expect("break");
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/runs"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "still works", "models": ["flux-2", "flux-ultra-1-1"]}))
        .send()
        .await
        .expect("run");
    assert_eq!(response.status(), StatusCode::CREATED, "the run is created all the same");
    let workers = start_workers(&app).await;
    wait_for("the jobs to settle", async || {
        count(&app, "SELECT count(*) FROM generation_job WHERE status IN ('queued', 'running')").await == 0
    })
    .await;
    workers.cancel();
    assert_eq!(count(&app, "SELECT count(*) FROM generation_job WHERE status = 'delivered' AND charged = 22").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM generation_job WHERE status = 'failed' AND charged = 0").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM webhook_event").await, 0, "the savepoints were rolled back");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_account_page_registers_shows_the_secret_once_rotates_and_deletes() {
    let app = webhook_app().await;
    let user = app.signed_in_user(100).await;
    let (status, page) = app.page("/account/webhooks").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("webhooks");
    let (_, account) = app.page("/account").await;
    assert_eq!(account.attr("[data-testid=webhooks-link]", "href").as_deref(), Some("/account/webhooks"));

    let fields = [("action", "create"), ("url", "ftp://nope"), ("event_run_completed", "on")];
    let refused = app.browser.submit("/account/webhooks", "/account/webhooks", &fields).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = Page::from_response(refused).await;
    assert!(page.text("#webhook-url-error").is_some_and(|e| e.contains("URL")), "the message is at the field");
    assert_eq!(page.attr("#webhook-url", "value").as_deref(), Some("ftp://nope"), "what was typed is kept");

    let fields = [
        ("action", "create"),
        ("url", "http://127.0.0.1:9/hook"),
        ("event_run_completed", "on"),
        ("event_credits_low", "on"),
        ("credits_low_threshold", "25"),
    ];
    let created = app.browser.submit("/account/webhooks", "/account/webhooks", &fields).await;
    assert_eq!(created.status(), StatusCode::OK);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let page = Page::from_response(created).await;
    let secret = page.text("[data-testid=new-webhook-secret]").expect("shown once");
    let stored: String =
        sqlx::query_scalar("SELECT secret FROM webhook_endpoint").fetch_one(&app.pool).await.expect("row");
    assert_eq!(secret, stored);
    let endpoints = webhooks::list(&app.pool, user.id).await.expect("list");
    assert_eq!(
        (endpoints[0].credits_low_threshold, endpoints[0].event_types()),
        (25, vec![EventType::RunCompleted, EventType::CreditsLow])
    );
    let (_, page) = app.page("/account/webhooks").await;
    assert_eq!(page.count("[data-testid=new-webhook-secret]"), 0, "only once");
    assert_eq!(page.count("[data-testid=webhook-endpoint]"), 1);

    let id = endpoints[0].endpoint_id.to_string();
    let rotated = app
        .browser
        .submit("/account/webhooks", "/account/webhooks", &[("action", "rotate"), ("endpoint_id", &id)])
        .await;
    let page = Page::from_response(rotated).await;
    let new = page.text("[data-testid=new-webhook-secret]").expect("the new secret");
    assert_ne!(new, secret);
    assert!(page.text("[data-testid=webhook-endpoint]").is_some_and(|t| t.contains("previous one also signs")));

    // Someone else's endpoint is not theirs to touch.
    let other = app.browser();
    other.sign_in(&app.create_user("other@example.com", 10).await).await;
    let foreign =
        other.submit("/account/webhooks", "/account/webhooks", &[("action", "delete"), ("endpoint_id", &id)]).await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let deleted = app
        .browser
        .submit("/account/webhooks", "/account/webhooks", &[("action", "delete"), ("endpoint_id", &id)])
        .await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(count(&app, "SELECT count(*) FROM webhook_endpoint").await, 0);
}

#[tokio::test]
async fn api_requests_are_rate_limited_per_key_with_headers_on_every_answer() {
    let app = TestApp::spawn_with(|c| c.api_rate_limit = std::num::NonZeroU32::new(5)).await;
    let ann = app.create_user("ann@example.com", 100).await;
    let bob = app.create_user("bob@example.com", 100).await;
    let (ann_key, bob_key) = (key(&app, &ann).await, key(&app, &bob).await);
    let api = reqwest::Client::new();
    let get = |key: &str| api.get(app.url("/api/v1/me")).bearer_auth(key).send();
    let value = |response: &reqwest::Response, name: &str| -> Option<u64> {
        response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    };
    for remaining in (0..5).rev() {
        let response = get(&ann_key).await.expect("me");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(value(&response, "x-ratelimit-limit"), Some(5));
        assert_eq!(value(&response, "x-ratelimit-remaining"), Some(remaining));
        assert!(value(&response, "x-ratelimit-reset").is_some_and(|s| s <= 60));
    }
    let refused = get(&ann_key).await.expect("me");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = value(&refused, "retry-after").expect("Retry-After");
    assert!((1..=12).contains(&retry_after), "one request every 12 s: {retry_after}");
    assert_eq!(value(&refused, "x-ratelimit-remaining"), Some(0));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other keys keep their own budget.
    assert_eq!(get(&bob_key).await.expect("me").status(), StatusCode::OK);
    // Every API answer carries the headers: errors, the public document, requests without a key.
    let no_key = api.get(app.url("/api/v1/me")).send().await.expect("me");
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(value(&no_key, "x-ratelimit-limit"), Some(5));
    let missing =
        api.get(app.url(&format!("/api/v1/runs/{}", Uuid::new_v4()))).bearer_auth(&bob_key).send().await.expect("run");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(value(&missing, "x-ratelimit-remaining").is_some());
    let doc = api.get(app.url("/api/v1/openapi.json")).send().await.expect("doc");
    assert!(value(&doc, "x-ratelimit-remaining").is_some());
    // Pages are not the API: no headers there.
    assert!(app.get("/").await.headers().get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn runs_and_credit_history_are_paginated_with_cursors() {
    let app = TestApp::spawn().await;
    let user = app.create_user("pages@example.com", 1000).await;
    let key = key(&app, &user).await;
    let api = reqwest::Client::new();
    let mut made = Vec::new();
    for n in 0..5 {
        let run: Value = api
            .post(app.url("/api/v1/runs"))
            .bearer_auth(&key)
            .json(&json!({"prompt": format!("page {n}"), "models": ["flux-2", "flux-2:klein-9b"]}))
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("json");
        made.push(run["id"].as_str().expect("id").to_string());
    }
    made.reverse(); // newest first
    async fn walk(api: &reqwest::Client, app: &TestApp, key: &str, path: &str, limit: usize) -> (Vec<Value>, usize) {
        let (mut all, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}?limit={limit}&cursor={c}"),
                None => format!("{path}?limit={limit}"),
            };
            let page: Value =
                api.get(app.url(&url)).bearer_auth(key).send().await.expect("page").json().await.expect("json");
            let data = page["data"].as_array().expect("data").clone();
            assert!(data.len() <= limit);
            pages += 1;
            all.extend(data);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return (all, pages),
            }
        }
    }
    let (runs, pages) = walk(&api, &app, &key, "/api/v1/runs", 2).await;
    assert_eq!(pages, 3);
    assert_eq!(runs.iter().map(|r| r["id"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>(), made);
    assert_eq!(runs[0]["jobs"].as_array().map(Vec::len), Some(2));

    // The history: the sign-up grant and ten reservations, newest first, the same in pages of 3.
    let (lines, pages) = walk(&api, &app, &key, "/api/v1/credits/history", 3).await;
    assert_eq!((lines.len(), pages), (11, 4));
    let (all, _) = walk(&api, &app, &key, "/api/v1/credits/history", 100).await;
    assert_eq!(lines, all);
    assert_eq!(lines.last().map(|l| l["kind"].clone()), Some(json!("signup_bonus")));
    let ids: Vec<i64> = lines.iter().filter_map(|l| l["id"].as_i64()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // A cursor of another list, or made up, is refused; so are limits out of range.
    let bad = api.get(app.url("/api/v1/runs?cursor=bm9wZQ")).bearer_auth(&key).send().await.expect("bad");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let zero = api.get(app.url("/api/v1/credits/history?limit=0")).bearer_auth(&key).send().await.expect("zero");
    assert_eq!(zero.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_studio_form_takes_an_idempotency_key_header_too() {
    let app = TestApp::spawn().await;
    app.signed_in_user(100).await;
    let post = || async {
        let token = app.browser.token("/studio?models=flux-2,flux-ultra-1-1", Some("/runs")).await;
        let form = reqwest::multipart::Form::new()
            .text("csrf_token", token)
            .text("prompt", "a script posting the form")
            .text("models", "flux-2")
            .text("models", "flux-ultra-1-1");
        app.browser
            .client
            .post(app.browser.url("/runs"))
            .header("Idempotency-Key", "script-run-1")
            .multipart(form)
            .send()
            .await
            .expect("POST /runs")
    };
    let (first, second) = (post().await, post().await);
    assert_eq!((first.status(), second.status()), (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER));
    assert_eq!(crate::helpers::location(&first), crate::helpers::location(&second), "the same run");
    assert_eq!(count(&app, "SELECT count(*) FROM generation_run WHERE idempotency_key = 'script-run-1'").await, 1);
}
