//! Many instances as one: two `faceoff serve` processes (`FACEOFF_WORKERS=0`) and one `faceoff
//! worker`, the real binary, over one fresh database: a run made on one instance streams live
//! on the other, each job is done once, a log-in limit counts attempts on both, a catalog load
//! reaches both, and a worker killed mid-job loses nothing. Also: the global rate-limit store
//! (PostgreSQL and Redis) shared by two limiters as two instances share it, its fail-open
//! fallback, and the read replica (`DATABASE_READ_URL`) as a read-only role.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    str::FromStr,
    time::Duration,
};

use faceoff::{
    accounts::rate_limit::{
        ApiLimits, LoginAttempt, Throttle, ThrottleSettings,
        store::{self, LimitStore},
    },
    ledger,
};
use reqwest::{StatusCode, multipart};
use sqlx::PgPool;
use tokio::{process::Child, time::Instant};
use uuid::Uuid;

use crate::helpers::{Browser, TestApp, TestDb, create_user_in, location, migrated_db, test_config};

const BIN: &str = env!("CARGO_BIN_EXE_faceoff");
const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The URL of `db` for another process: `DATABASE_URL` (with its password, if any) pointed at
/// the test database, else built from the connection options.
fn database_url(db: &TestDb) -> String {
    if let Ok(base) = std::env::var("DATABASE_URL")
        && let Ok(mut url) = url::Url::parse(&base)
    {
        url.set_path(&format!("/{}", db.name));
        return url.to_string();
    }
    let o = &db.options;
    let host = o.get_host();
    if host.starts_with('/') {
        format!("postgres://{}@localhost:{}/{}?host={host}", o.get_username(), o.get_port(), db.name)
    } else {
        format!("postgres://{}@{host}:{}/{}", o.get_username(), o.get_port(), db.name)
    }
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// One process of the binary; killed (SIGKILL) when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kill -9`: no graceful shutdown, nothing given back.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }
}

/// The shared setting of every process of the deployment.
struct Deployment {
    dir: PathBuf,
    database_url: String,
}

impl Deployment {
    fn start(&self, name: &'static str, args: &[&str], env: &[(&str, &str)]) -> Process {
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            // Nothing from the test's environment (nor a `.env`: the working directory has none).
            .env_clear()
            .current_dir(&self.dir)
            .env("DATABASE_URL", &self.database_url)
            .env("FACEOFF_DATA_DIR", self.dir.join("data"))
            .env("FACEOFF_STORAGE_URL", format!("file://{}", self.dir.join("media").display()))
            .env("FACEOFF_CATALOG_FILE", self.dir.join("catalog.toml"))
            .env("FACEOFF_METRICS_ADDR", "off")
            .env("FACEOFF_SANDBOX_LATENCY_MS", "1500")
            .env("FACEOFF_CLIENT_IP_HEADER", "X-Forwarded-For")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {BIN} {args:?}: {e}"));
        Process { name, child, log }
    }

    /// `faceoff serve` with no workers, once it answers `/readyz`.
    async fn serve(&self, name: &'static str) -> (Process, SocketAddr) {
        let addr = free_addr();
        let process = self.start(name, &["serve"], &[("FACEOFF_ADDR", &addr.to_string()), ("FACEOFF_WORKERS", "0")]);
        ready(&process, addr).await;
        (process, addr)
    }

    /// `faceoff worker` (two workers), once its metrics listener answers `/readyz`.
    async fn worker(&self, name: &'static str) -> Process {
        let metrics = free_addr();
        let process =
            self.start(name, &["worker"], &[("FACEOFF_WORKERS", "2"), ("FACEOFF_METRICS_ADDR", &metrics.to_string())]);
        ready(&process, metrics).await;
        process
    }
}

async fn ready(process: &Process, addr: SocketAddr) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        assert!(Instant::now() < deadline, "{} did not become ready:\n{}", process.name, process.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits the studio form on `browser`'s instance; the new run's id.
async fn submit_run(browser: &Browser, prompt: &str) -> Uuid {
    let (status, page) = browser.page("/studio?models=flux-2,flux-ultra-1-1").await;
    assert_eq!(status, StatusCode::OK);
    let csrf = page.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf");
    let key = page.attr("input[name=idempotency_key]", "value").expect("idempotency key");
    let form = multipart::Form::new()
        .text("csrf_token", csrf)
        .text("idempotency_key", key)
        .text("prompt", prompt.to_string())
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("seed", "")
        .text("models", "flux-2")
        .text("models", "flux-ultra-1-1");
    let response = browser.post_multipart("/runs", form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "run submission");
    let location = location(&response);
    location.strip_prefix("/runs/").and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("location {location}"))
}

/// One row per job of the run: (status, attempts, hold status, settlements of its hold, charged).
async fn job_ledger(pool: &PgPool, run_id: Uuid) -> Vec<(String, i32, String, i64, Option<i64>)> {
    sqlx::query_as(
        "SELECT j.status, j.attempts, h.status,
                (SELECT count(*) FROM ledger_transfer t
                 WHERE t.hold_id = j.hold_id AND t.kind IN ('hold_post', 'hold_release')),
                j.charged
         FROM generation_job j JOIN ledger_hold h USING (hold_id)
         WHERE j.run_id = $1 ORDER BY j.job_id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .expect("jobs and holds")
}

async fn wait_until_settled(
    pool: &PgPool,
    run_id: Uuid,
    worker: &Process,
) -> Vec<(String, i32, String, i64, Option<i64>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = job_ledger(pool, run_id).await;
        if rows.iter().all(|(status, ..)| status != "queued" && status != "running") {
            return rows;
        }
        assert!(Instant::now() < deadline, "jobs did not settle: {rows:?}\n{}:\n{}", worker.name, worker.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_done_once(rows: &[(String, i32, String, i64, Option<i64>)]) {
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (status, _, hold, settlements, charged) in rows {
        assert_eq!(status, "delivered", "{rows:?}");
        assert_eq!(hold, "posted", "{rows:?}");
        assert_eq!(*settlements, 1, "one settlement per hold: {rows:?}");
        assert!(charged.is_some_and(|c| c > 0), "{rows:?}");
    }
}

/// Reads server-sent events until one named `name`; the names seen before it.
async fn events_until(response: &mut reqwest::Response, name: &str, deadline: Instant) -> Option<Vec<String>> {
    let (mut buffer, mut seen) = (String::new(), Vec::new());
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(event) = event.lines().find_map(|l| l.strip_prefix("event: ")) {
                seen.push(event.to_string());
                if event == name {
                    return Some(seen);
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.ok()?;
        buffer.push_str(&String::from_utf8_lossy(&chunk.ok()??));
    }
}

#[tokio::test]
async fn two_servers_and_a_worker_on_one_database_act_as_one() {
    faceoff::telemetry::init_for_test();
    let db = TestDb::create().await;
    let pool = db.pool(5);
    let dir = std::env::temp_dir().join(format!("faceoff-scale-{}-{}", std::process::id(), Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let catalog_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog/catalog.toml");
    let catalog = std::fs::read_to_string(&catalog_file).expect("catalog");
    std::fs::write(dir.join("catalog.toml"), &catalog).expect("catalog copy");
    let mut config = test_config();
    config.catalog_file = Some(dir.join("catalog.toml"));
    faceoff::server::prepare_database(&pool, &config).await.expect("prepare");
    let deployment = Deployment { dir: dir.clone(), database_url: database_url(&db) };

    let ((a, a_addr), (b, b_addr), worker) =
        tokio::join!(deployment.serve("serve-a"), deployment.serve("serve-b"), deployment.worker("worker"));

    // A run made on A streams its live updates on B. Without notifications, the stream would
    // send its first state and then at most one event per safety-net reload (every 10 s,
    // `live_refresh`): more events than that came through the job notifications, which only
    // the worker (a third process) sends.
    let user = create_user_in(&pool, "scale@example.com", 500).await;
    let on_a = Browser::new(a_addr);
    on_a.sign_in(&user).await;
    let on_b = on_a.at(b_addr);
    let run = submit_run(&on_a, "a lighthouse at dusk, seen from instance A").await;
    let opened = Instant::now();
    let mut events = on_b.get(&format!("/runs/{run}/events")).await;
    assert_eq!(events.status(), StatusCode::OK);
    let seen = events_until(&mut events, "done", opened + Duration::from_secs(60)).await;
    let took = opened.elapsed();
    let seen = seen.unwrap_or_else(|| panic!("no `done` on B within 60 s\n{}", worker.log_tail()));
    println!("instance B streamed {} events of the run made on A in {took:?}", seen.len());
    let reloads = (took.as_secs_f64() / 10.0).floor() as usize;
    assert!(seen[0] == "run" && seen.len() - 1 > reloads, "{seen:?} in {took:?}: only the safety net");
    // Each job done exactly once: delivered, its hold posted by one settlement.
    let first = wait_until_settled(&pool, run, &worker).await;
    assert_done_once(&first);
    assert!(first.iter().all(|(_, attempts, ..)| *attempts == 1), "{first:?}");
    let (status, page) = on_b.page(&format!("/runs/{run}")).await;
    assert_eq!(status, StatusCode::OK);
    // Its images, stored by the worker, are served by B.
    let images: Vec<String> = page.attrs("img", "src").into_iter().filter(|src| src.starts_with("/media/")).collect();
    assert!(images.len() >= 2, "{images:?}");
    assert_eq!(on_b.get(&images[0]).await.status(), StatusCode::OK, "{}", images[0]);

    // A log-in limit counts attempts on both instances: 30 a minute per address, then one every
    // 2 s. Two per-process limits would let 60 through at once. Eight log-ins are in flight at a
    // time, alternating between the instances, until both have refused one: a log-in's password
    // hash runs at idle priority and may take over a second on a busy machine, and one at a time
    // the refill (one per 2 s) could then keep up with them.
    let address = format!("198.51.100.{}", rand::random::<u8>() % 250 + 1);
    let user = &user;
    let attempt = |i: usize| {
        let (addr, address) = (if i.is_multiple_of(2) { a_addr } else { b_addr }, address.clone());
        async move {
            let response =
                Browser::with_header(addr, "X-Forwarded-For", &address).log_in(&user.email, &user.password).await;
            (addr, response.status(), response.headers().contains_key("retry-after"))
        }
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let (mut in_flight, mut sent) = (futures::stream::FuturesUnordered::new(), 0);
    let (mut allowed, mut refused_on) = (0u32, std::collections::HashSet::new());
    loop {
        while refused_on.len() < 2 && in_flight.len() < 8 && Instant::now() < deadline {
            in_flight.push(attempt(sent));
            sent += 1;
        }
        let Some((addr, status, retry_after)) = futures::StreamExt::next(&mut in_flight).await else { break };
        match status {
            StatusCode::SEE_OTHER => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(retry_after, "a refusal says when to retry");
                refused_on.insert(addr);
            }
            other => panic!("log-in answered {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("{sent} log-ins from one address in {elapsed:.1} s: {allowed} allowed");
    assert_eq!(refused_on.len(), 2, "{sent} log-ins in {elapsed:.1} s, {allowed} allowed: refused on {refused_on:?}");
    // 30 at once, plus what refilled meanwhile (one per 2 s), plus one of rounding.
    let bound = 30 + (elapsed / 2.0).ceil() as u32 + 1;
    assert!(allowed <= bound, "{allowed} log-ins allowed in {elapsed:.1} s (at most {bound} globally)");
    assert!(allowed >= 30, "{allowed}: the budget is the limit, not less");

    // A catalog load reaches both instances (LISTEN catalog_changed on each).
    let marker = format!("Reloaded-{}", Uuid::new_v4().simple());
    let edited = catalog.replacen(
        "description = \"FLUX1.1 [pro] in Ultra mode:",
        &format!("description = \"{marker} FLUX1.1 [pro] in Ultra mode:"),
        1,
    );
    assert_ne!(edited, catalog, "the catalog's Ultra description moved: update this test");
    std::fs::write(dir.join("catalog.toml"), &edited).expect("edit catalog");
    let load = deployment.start("catalog-load", &["catalog", "load"], &[]);
    let status = load.child.wait_with_output().await.expect("catalog load").status;
    assert!(status.success(), "faceoff catalog load failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    for addr in [a_addr, b_addr] {
        loop {
            let body = Browser::new(addr).get("/models/flux-ultra-1-1").await.text().await.expect("page");
            if body.contains(&marker) {
                break;
            }
            assert!(Instant::now() < deadline, "the catalog load did not reach {addr}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // kill -9 of the worker mid-job loses nothing: once its leases run out another worker
    // finishes the jobs, each charged once.
    let run = submit_run(&on_b, "a harbour at dawn, submitted on B").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = job_ledger(&pool, run).await;
        if rows.iter().any(|(status, ..)| status == "running") {
            break;
        }
        assert!(Instant::now() < deadline, "no job started: {rows:?}\n{}", worker.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill().await;
    let orphaned = job_ledger(&pool, run).await;
    assert!(orphaned.iter().any(|(status, ..)| status == "running"), "{orphaned:?}");
    assert!(orphaned.iter().all(|(_, _, hold, ..)| hold == "pending" || hold == "posted"), "{orphaned:?}");
    // The lease is 60 s; rather than wait for it, run its clock forward (the claim of an
    // expired lease is what is under test, not the waiting).
    sqlx::query(
        "UPDATE generation_job SET lease_expires_at = now() - interval '1 second'
         WHERE run_id = $1 AND status = 'running'",
    )
    .bind(run)
    .execute(&pool)
    .await
    .expect("expire leases");
    let replacement = deployment.worker("worker-2").await;
    let second = wait_until_settled(&pool, run, &replacement).await;
    assert_done_once(&second);
    assert!(second.iter().any(|(_, attempts, ..)| *attempts >= 2), "a job was retried after the kill: {second:?}");

    // The user paid each job once, and nothing is held.
    let charged: i64 = first.iter().chain(&second).filter_map(|row| row.4).sum();
    let balance = ledger::balance(&pool, user.id).await.expect("balance");
    assert_eq!((balance.available, balance.held), (500 - charged, 0));
    crate::helpers::assert_ledger_invariants(&pool).await;

    drop((a, b, replacement));
    let _ = std::fs::remove_dir_all(&dir);
}

fn settings(attempts_per_minute: u32) -> ThrottleSettings {
    ThrottleSettings {
        attempts_per_minute,
        free_failures: 5,
        free_failures_per_address: 20,
        base_backoff: Duration::from_secs(60),
    }
}

fn an_address() -> IpAddr {
    IpAddr::from([10, rand::random(), rand::random(), rand::random()])
}

/// Two limiters over one store, as two instances: every limit is global.
async fn limits_are_shared(one: LimitStore, two: LimitStore) {
    let (a, b) = (Throttle::with_store(settings(30), one.clone()), Throttle::with_store(settings(30), two.clone()));
    // Sign-up attempts per address: 15 on each, then both refuse.
    let address = an_address();
    for _ in 0..15 {
        a.check_signup(address).await.expect("within the limit");
        b.check_signup(address).await.expect("within the limit");
    }
    let refused = a.check_signup(address).await.expect_err("31st on A");
    assert!((1..=2).contains(&refused.retry_after), "{refused:?}");
    assert!(b.check_signup(address).await.is_err(), "31st on B");

    // Log-in failures: 3 on A and 2 on B back off on both.
    let email = format!("{}@example.com", Uuid::new_v4());
    let attempt = LoginAttempt { email: &email, address: an_address(), device: None };
    for throttle in [&a, &a, &a, &b, &b] {
        throttle.check_login(&attempt).await.expect("free failures");
        throttle.login_failed(&attempt).await;
    }
    let waiting = b.check_login(&attempt).await.expect_err("backing off on B");
    assert!((59..=60).contains(&waiting.retry_after), "{waiting:?}");
    assert!(a.check_login(&attempt).await.is_err(), "and on A");
    // A success on one clears the failures for both (B's own records are under its free ones).
    a.login_succeeded(&attempt).await;
    b.check_login(&attempt).await.expect("cleared everywhere");

    // API keys: the budget is shared, with the headers' numbers.
    let (api_a, api_b) = (
        ApiLimits::with_store(std::num::NonZeroU32::new(3), one),
        ApiLimits::with_store(std::num::NonZeroU32::new(3), two),
    );
    let key = Uuid::new_v4();
    let first = api_a.check_key(key).await.expect("limited");
    assert_eq!((first.limit, first.remaining, first.retry_after), (3, 2, None));
    assert_eq!(api_b.check_key(key).await.map(|q| q.remaining), Some(1));
    assert_eq!(api_a.check_key(key).await.map(|q| q.remaining), Some(0));
    let refused = api_b.check_key(key).await.expect("limited");
    assert!(refused.retry_after.is_some_and(|s| (1..=20).contains(&s)), "{refused:?}");
    assert_eq!(refused.remaining, 0);
}

#[tokio::test]
async fn rate_limits_are_global_in_postgresql() {
    let (_db, pool) = migrated_db(4).await;
    limits_are_shared(LimitStore::postgres(pool.clone()), LimitStore::postgres(pool.clone())).await;
    // Nothing in clear: keys are hashes.
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM rate_limit_bucket UNION ALL SELECT key FROM rate_limit_failure")
            .fetch_all(&pool)
            .await
            .expect("keys");
    assert!(!keys.is_empty() && keys.iter().all(|k| !k.contains('@') && !k.contains("10.")), "{keys:?}");
    // Expired counters are purged.
    sqlx::query("UPDATE rate_limit_bucket SET expires_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .expect("age");
    let purged = LimitStore::postgres(pool.clone()).purge_expired().await.expect("purge");
    assert!(purged > 0);
}

#[tokio::test]
async fn rate_limits_are_global_in_redis() {
    let prefix = format!("faceoff-test:{}:", Uuid::new_v4().simple());
    let (one, two) = match (LimitStore::redis(REDIS_URL, &prefix).await, LimitStore::redis(REDIS_URL, &prefix).await) {
        (Ok(one), Ok(two)) => (one, two),
        (Err(err), _) | (_, Err(err)) => {
            println!("SKIPPED rate_limits_are_global_in_redis: no Redis at {REDIS_URL}: {err:#}");
            return;
        }
    };
    assert_eq!(one.kind(), "redis");
    limits_are_shared(one.clone(), two).await;
    // Every key expires on its own.
    let client = redis::Client::open(REDIS_URL).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connection");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.expect("keys");
    assert!(!keys.is_empty());
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.expect("ttl");
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.expect("clean up");
}

#[tokio::test]
async fn the_app_limits_log_ins_through_redis() {
    let probe = redis::Client::open(REDIS_URL).expect("client");
    if let Err(err) = probe.get_multiplexed_async_connection().await {
        println!("SKIPPED the_app_limits_log_ins_through_redis: no Redis at {REDIS_URL}: {err}");
        return;
    }
    let app = TestApp::spawn_with(|c| {
        c.redis_url = Some(faceoff::config::Secret::new(REDIS_URL));
        c.throttle.base_backoff = Duration::from_secs(60);
    })
    .await;
    assert!(format!("{:?}", app.state.throttle).contains("redis"), "{:?}", app.state.throttle);
    let user = app.create_user(&format!("{}@example.com", Uuid::new_v4()), 0).await;
    for _ in 0..5 {
        let response = app.browser().log_in(&user.email, "wrong password").await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "a failed log-in shows the form again");
    }
    let refused = app.browser().log_in(&user.email, &user.password).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    // The JSON API's headers, counted in Redis.
    let response = app.get("/api/v1/models").await;
    assert!(response.headers().contains_key("x-ratelimit-remaining"));
}

#[tokio::test]
async fn an_unreachable_store_falls_back_to_the_per_process_limit() {
    // Nothing listens on port 1: every store call fails (within STORE_TIMEOUT).
    let options = sqlx::postgres::PgConnectOptions::from_str("postgres://nobody@127.0.0.1:1/none").expect("url");
    let pool =
        sqlx::postgres::PgPoolOptions::new().acquire_timeout(Duration::from_millis(300)).connect_lazy_with(options);
    let throttle = Throttle::with_store(settings(3), LimitStore::postgres(pool));
    let address = an_address();
    for _ in 0..3 {
        throttle.check_signup(address).await.expect("fails open");
    }
    assert!(throttle.check_signup(address).await.is_err(), "the per-process limit still holds");
    let key = store::key("api:key", &[b"x"]);
    assert!(key.starts_with("api:key:") && key.len() == "api:key:".len() + 32);
}

/// `DATABASE_READ_URL` as a role that may only read: catalog pages work on it, while sign-in,
/// the credits page (ledger reads) and run submission (writes) go to the primary.
#[tokio::test]
async fn catalog_pages_read_from_the_replica_and_everything_else_from_the_primary() {
    let db = TestDb::create().await;
    let reader = format!("faceoff_reader_{}", Uuid::new_v4().simple());
    let admin = db.pool(2);
    let (read_url, _) = {
        // Roles are per server: this one is dropped at the end.
        for sql in [
            format!("CREATE ROLE {reader} LOGIN"),
            format!("GRANT CONNECT ON DATABASE \"{}\" TO {reader}", db.name),
            format!("ALTER ROLE {reader} SET default_transaction_read_only = on"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await.expect("role");
        }
        let mut url = url::Url::parse(&database_url(&db)).expect("url");
        url.set_username(&reader).expect("user");
        url.set_password(None).expect("password");
        (url.to_string(), ())
    };
    let app =
        TestApp::spawn_over(db, |c| c.database_read_url = Some(faceoff::config::Secret::new(read_url.clone()))).await;
    // After the migrations: read access to every table (as a replica has).
    for sql in [
        format!("GRANT USAGE ON SCHEMA public TO {reader}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&app.pool).await.expect("grant");
    }
    // The role really cannot write.
    let replica = app.state.read_pool.get();
    let write = sqlx::query("INSERT INTO rate_limit_failure VALUES ('x', 1, now(), now())").execute(replica).await;
    assert!(write.is_err(), "the read role wrote");

    for path in ["/", "/compare/flux-2-vs-flux-ultra-1-1/portrait", "/leaderboard", "/models"] {
        let (status, _) = app.page(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    assert_eq!(app.get("/api/v1/leaderboard").await.status(), StatusCode::OK);
    let used: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
        .bind(&reader)
        .fetch_one(&app.pool)
        .await
        .expect("activity");
    assert!(used >= 1, "the catalog pages did not use the read pool");

    // Writes and ledger reads on the primary: sign in, the credits page, a run.
    let user = app.signed_in_user(100).await;
    let (status, credits) = app.page("/credits").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(credits.text("[data-testid=balance]").as_deref(), Some("100"));
    let run = submit_run(&app.browser, "a lighthouse at dusk").await;
    let balance = ledger::balance(&app.pool, user.id).await.expect("balance");
    assert!(balance.held > 0, "the run's holds, written to the primary ({run})");

    app.state.read_pool.get().close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP OWNED BY {reader}"))).execute(&app.pool).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {reader}"))).execute(&app.pool).await;
}
