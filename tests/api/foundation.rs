//! The foundation: the layout, error pages, health, metrics, limits and graceful shutdown.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{Page, TestApp, TestDb};

#[tokio::test]
async fn home_page_renders_in_the_layout() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page("/").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("home");
    let nav = page.texts("nav[aria-label=Main] a");
    assert_eq!(nav, ["Models", "Compare", "Studio", "Credits"]);
    assert_eq!(page.text(".account-nav a[href=\"/login\"]").as_deref(), Some("Log in"));
    assert_eq!(page.text(".account-nav a[href=\"/signup\"]").as_deref(), Some("Sign up"));
    assert_eq!(page.count("header"), 1);
    assert_eq!(page.count("footer"), 1);
    // The stylesheet is served by the app with a cache-busted URL and a long cache lifetime.
    let css = page.attr("link[rel=stylesheet]", "href").expect("stylesheet");
    assert!(css.starts_with("/assets/app.css?v="), "{css}");
    let response = app.get(&css).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(response.headers()["content-type"].to_str().unwrap_or("").starts_with("text/css"));
}

#[tokio::test]
async fn security_headers_are_set() {
    let app = TestApp::spawn().await;
    let response = app.get("/").await;
    let headers = response.headers();
    let csp = headers["content-security-policy"].to_str().expect("ascii");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers.contains_key("referrer-policy"));
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_pages_in_the_layout() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page("/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    page.assert_well_formed("404");
    assert_eq!(page.text("h1").as_deref(), Some("Page not found"));
    assert_eq!(page.count("nav[aria-label=Main]"), 1, "the error page uses the site layout");

    let response = app.browser.client.delete(app.url("/")).send().await.expect("DELETE");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let page = Page::from_response(response).await;
    assert_eq!(page.count("nav[aria-label=Main]"), 1);
}

#[tokio::test]
async fn api_errors_are_json() {
    let app = TestApp::spawn().await;
    let response = app.get("/api/v1/no-such-thing").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn oversized_and_malformed_bodies_get_4xx_pages_never_500() {
    let app = TestApp::spawn().await;
    // 50 MB body.
    let big = vec![b'a'; 50 * 1024 * 1024];
    let response = app
        .browser
        .client
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await;
    match response {
        Ok(response) => {
            assert!(response.status().is_client_error(), "{}", response.status());
            let body = response.text().await.unwrap_or_default();
            assert!(body.contains("<nav"), "rendered in the layout");
        }
        // The server may close the connection before reading the whole body; that is a 4xx too
        // from the server's side (it never reached a handler).
        Err(err) => assert!(err.is_request() || err.is_body(), "{err}"),
    }
    // Invalid UTF-8 in a form body.
    let response = app
        .browser
        .client
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'e', b'm', b'a', b'i', b'l', b'=', 0xff, 0xfe, b'&', b'p', b'=', 0xc3])
        .send()
        .await
        .expect("POST");
    assert!(response.status().is_client_error(), "{}", response.status());
    assert!(response.text().await.expect("body").contains("<nav"));
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    app.get("/").await;
    // Metrics are not public: they are served on a listener of their own (loopback by default).
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = faceoff::app::metrics_router(app.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("GET").text().await.expect("metrics");
    assert!(metrics.contains("http_requests_total{method=\"GET\",route=\"/\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("http_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("db_pool_connections"), "{metrics}");
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    // Make the database unreachable for this app: refuse new connections and end the pool's.
    let admin = app.db.options.clone().database("postgres");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&admin).await.expect("admin");
    let name = app.db.name.clone();
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")))
        .execute(&mut conn)
        .await
        .expect("disallow");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut conn)
        .await
        .expect("terminate");
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "liveness does not depend on the database");
    wait_for_status(&app, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")))
        .execute(&mut conn)
        .await
        .expect("allow");
    wait_for_status(&app, "/readyz", StatusCode::OK).await;
}

async fn wait_for_status(app: &TestApp, path: &str, want: StatusCode) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = app.get(path).await.status();
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} still {got}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let mut app = TestApp::spawn().await;
    // A slow request: the body trickles in over ~1.5 s.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = app
        .browser
        .client
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send();
    let in_flight = tokio::spawn(request);
    tx.send(Ok(b"email=slow%40example.com".to_vec())).await.expect("send");
    // Wait until the server has the request, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(async move {
        app.stop().await;
        app
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(b"&password=whatever".to_vec())).await.expect("send");
    drop(tx);
    let response = in_flight.await.expect("task").expect("the in-flight request completes");
    assert!(response.status().as_u16() < 500, "{}", response.status());
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("server stopped").expect("join");
}

#[tokio::test]
async fn a_signed_in_page_shows_the_balance_in_the_header() {
    let app = TestApp::spawn().await;
    app.signed_in_user(100).await;
    let (status, page) = app.page("/").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("home, signed in");
    assert_eq!(page.text("[data-testid=balance]").as_deref(), Some("100"));
    assert_eq!(page.count("[data-testid=held]"), 0, "no held credits, no held element");
    assert!(page.attr("form[action=\"/logout\"] input[name=csrf_token]", "value").is_some_and(|t| t.len() >= 32));
}

/// Polls `future` up to `polls` times, letting the runtime run in between, then drops it: a
/// caller cancelled at every possible point of its progress.
async fn cancel_after<F: std::future::Future>(future: F, polls: usize) {
    let mut future = std::pin::pin!(future);
    for _ in 0..polls {
        if futures::poll!(future.as_mut()).is_ready() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_cancelled_begin_never_leaves_an_open_transaction_in_the_pool() {
    let db = TestDb::create().await;
    // One connection, so every statement below reuses whatever state begin() left on it.
    let pool = db.pool(1);
    sqlx::query("CREATE TABLE probe (n int)").execute(&pool).await.expect("create");
    let mut observer = <sqlx::PgConnection as sqlx::Connection>::connect_with(&db.options).await.expect("observer");
    for polls in 1..=60_i32 {
        cancel_after(faceoff::db::begin(&pool), polls as usize).await;
        // An autocommit write through the pool is committed at once, not swallowed by a
        // transaction the cancelled begin left open.
        sqlx::query("INSERT INTO probe VALUES ($1)").bind(polls).execute(&pool).await.expect("insert");
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM probe").fetch_one(&mut observer).await.expect("count");
        assert_eq!(seen, i64::from(polls), "cancelled after {polls} polls: the write is not visible");
    }
}

#[tokio::test]
async fn a_request_whose_client_hangs_up_still_runs_to_completion() {
    use reqwest::cookie::CookieStore;
    use tower::ServiceExt;

    let app = TestApp::spawn().await;
    let csrf = app.browser.token("/signup", Some("/signup")).await;
    let url = app.url("/signup").parse().expect("url");
    let cookie = app.browser.jar.cookies(&url).expect("the CSRF cookie");
    let form = format!("email=gone%40example.com&password=correct+horse+battery&csrf_token={csrf}");
    let request = axum::http::Request::post("/signup")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))))
        .body(axum::body::Body::from(form))
        .expect("request");

    // The client hangs up as soon as the request is in: its response future is dropped after
    // one poll, while the session is still being loaded.
    let mut response = Box::pin(faceoff::app(app.state.clone()).oneshot(request));
    assert!(futures::poll!(response.as_mut()).is_pending(), "the sign-up cannot be done in one poll");
    drop(response);

    // The sign-up still happens, whole: the account and its signup bonus.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let balance: Option<i64> = sqlx::query_scalar(
            "SELECT a.balance FROM ledger_account a JOIN app_user u ON u.user_id = a.user_id WHERE u.email = $1",
        )
        .bind("gone@example.com")
        .fetch_optional(&app.pool)
        .await
        .expect("query");
        if let Some(balance) = balance {
            assert_eq!(balance, 100);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the abandoned sign-up never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every channel a process follows shares one `LISTEN` connection (`db::notifications`): each
/// follower hears its own channel's notifications (and only those), is told when its channel is
/// listened to and again after the connection is lost and back, and only one of the database's
/// sessions listens, whatever the number of channels.
#[tokio::test]
async fn every_channel_of_a_process_shares_one_listening_connection() {
    let app = TestApp::spawn().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, Option<String>)>();
    for channel in ["test_one", "test_two", "test_three"] {
        let (pool, shutdown, tx) = (app.pool.clone(), shutdown.clone(), tx.clone());
        tokio::spawn(async move {
            faceoff::db::listen(&pool, channel, channel, &shutdown, |payload| {
                let _ = tx.send((channel, payload));
                std::future::ready(())
            })
            .await;
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut next = async || {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        tokio::time::timeout(left, rx.recv()).await.expect("an event in time").expect("senders alive")
    };
    // Each is told once its channel is listened to.
    let mut connected = Vec::new();
    while connected.len() < 3 {
        let (channel, payload) = next().await;
        assert_eq!(payload, None, "nothing was sent yet");
        connected.push(channel);
    }
    connected.sort_unstable();
    assert_eq!(connected, ["test_one", "test_three", "test_two"]);

    let listening = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(&app.pool)
        .await
        .expect("activity")
    };
    // The mail sender of the test app follows its channel too: still one session.
    let pids = listening().await;
    assert_eq!(pids.len(), 1, "one session listens for every channel");

    for (channel, payload) in [("test_two", "b"), ("test_one", "a")] {
        sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&app.pool).await.expect("notify");
        assert_eq!(next().await, (channel, Some(payload.to_string())), "only its own channel's follower hears it");
    }

    // The connection is lost: everyone is told when it is back, and notifications flow again.
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pids[0]).execute(&app.pool).await.expect("terminate");
    let mut told = Vec::new();
    while told.len() < 3 {
        let (channel, payload) = next().await;
        assert_eq!(payload, None);
        told.push(channel);
    }
    sqlx::query("SELECT pg_notify('test_three', 'c')").execute(&app.pool).await.expect("notify");
    assert_eq!(next().await, ("test_three", Some("c".to_string())));
    assert_eq!(listening().await.len(), 1);
    shutdown.cancel();
}
