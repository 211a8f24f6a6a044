//! The test harness: every test gets the real app, listening on `127.0.0.1:0`, over a fresh
//! database of its own (created on the same server the app would use: `DATABASE_URL`, else the
//! local default, else the private cluster), and a [`Browser`] (`app.browser`) that `app.get`
//! and `app.page` use; [`TestApp::browser`] makes one more per extra simulated person.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use std::sync::Arc;

use faceoff::{AppState, config::Config, server};
use reqwest::{
    StatusCode,
    cookie::{CookieStore, Jar},
    redirect::Policy,
};
use scraper::{Html, Selector};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio_util::sync::CancellationToken;

/// Where test databases are created: resolved once per test binary.
fn server_options() -> &'static PgConnectOptions {
    static SERVER: OnceLock<PgConnectOptions> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Resolution is async and may start a private cluster; do it on a runtime of its own so
        // the result outlives any one test's runtime. The cluster, if started, keeps running for
        // later test binaries (and `cargo run`), which reuse it.
        on_own_runtime(|| async {
            let config = Config::from_env().expect("test configuration");
            let server = faceoff::db::locate(&config).await.expect("a PostgreSQL server for the tests");
            let options = server.options.clone();
            std::mem::forget(server);
            drop_stale_databases(&options).await;
            remove_stale_dirs();
            options
        })
        .expect("resolving the test database server")
    })
}

/// Runs `work` to completion on a thread and runtime of its own, from sync code or from inside a
/// test's runtime (whose end would cancel it).
fn on_own_runtime<T, F>(work: impl FnOnce() -> F + Send + 'static) -> std::thread::Result<T>
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(work())
    })
    .join()
}

/// Whether process `pid` still runs: a test database or directory named after it is in use.
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `DROP DATABASE`, whoever is connected to it.
async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(conn).await.map(drop)
}

/// Drops test databases left behind by test processes that no longer exist.
async fn drop_stale_databases(options: &PgConnectOptions) {
    let Ok(mut conn) = PgConnection::connect_with(&options.clone().database("postgres")).await else {
        return;
    };
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'faceoff_test_%'")
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if !pid.is_some_and(process_exists) {
            let _ = drop_database(&mut conn, &name).await;
        }
    }
}

/// The name of a test app's directory under the temp dir: `faceoff-test-<pid>-<n>`.
const TEST_DIR_PREFIX: &str = "faceoff-test-";

/// Removes test directories (`faceoff-test-<pid>-…`, `faceoff-scale-<pid>-…` under the temp dir)
/// left by test processes that no longer exist: a failed or killed test keeps its files.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) =
            name.to_str().and_then(|n| n.strip_prefix(TEST_DIR_PREFIX).or(n.strip_prefix("faceoff-scale-")))
        else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !process_exists(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A test app's files (media, the mail outbox): [`test_config`]'s directory, removed with the
/// app. A directory a test chose itself is left alone.
struct DataDir(std::path::PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let ours = self.0.parent() == Some(std::env::temp_dir().as_path())
            && self.0.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(TEST_DIR_PREFIX));
        if ours {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The name of a template database holding every migration of this build, made on first use and
/// kept for later test processes: it is named after the migrations' checksums, so a changed or
/// added migration gets a new one (and the old ones are dropped). Nothing ever connects to it
/// once it is made, which `CREATE DATABASE … TEMPLATE` requires.
fn migrated_template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let mut hasher = std::hash::DefaultHasher::new();
        for migration in faceoff::db::migrator().iter() {
            std::hash::Hash::hash(
                &(migration.version, &migration.migration_type.is_down_migration(), &*migration.checksum),
                &mut hasher,
            );
        }
        let name = format!("faceoff_template_{:016x}", std::hash::Hasher::finish(&hasher));
        let options = server_options().clone();
        on_own_runtime(move || make_template(options, name)).expect("making the migrated template database")
    })
}

/// Whether database `name` is a template; `None` if there is none.
async fn is_template(conn: &mut PgConnection, name: &str) -> Option<bool> {
    sqlx::query_scalar("SELECT datistemplate FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
        .expect("reading pg_database")
}

async fn make_template(options: PgConnectOptions, name: String) -> String {
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres")).await.expect("connect");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut unmarked_since = None;
    loop {
        assert!(std::time::Instant::now() < deadline, "no template {name} after 5 minutes");
        match is_template(&mut conn, &name).await {
            Some(true) => break,
            // Another test process is making it: it renames its build, then marks it a template
            // at once. Still unmarked a minute later, its maker died in between: start again.
            Some(false) => {
                let since = *unmarked_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < std::time::Duration::from_secs(60) {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                } else {
                    drop_database(&mut conn, &name).await.expect("drop an unfinished template");
                    unmarked_since = None;
                }
            }
            None => {
                // Built under a name the stale-database sweep knows (`faceoff_test_<pid>_…`), so a
                // process killed while building leaves nothing behind for long.
                let build = format!("faceoff_test_{}_template", std::process::id());
                let sql = |s: String| sqlx::query(sqlx::AssertSqlSafe(s));
                drop_database(&mut conn, &build).await.expect("drop");
                sql(format!("CREATE DATABASE \"{build}\"")).execute(&mut conn).await.expect("create the template");
                let pool = faceoff::db::pool_options(2).connect_lazy_with(options.clone().database(&build));
                faceoff::db::migrate(&pool).await.expect("migrate the template");
                pool.close().await;
                // The pool's server processes may take a moment to exit after it closed.
                let renamed = loop {
                    match sql(format!("ALTER DATABASE \"{build}\" RENAME TO \"{name}\"")).execute(&mut conn).await {
                        Ok(_) => break true,
                        Err(_) if is_template(&mut conn, &name).await.is_some() => break false,
                        Err(err) => {
                            assert!(std::time::Instant::now() < deadline, "renaming {build}: {err}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                };
                if !renamed {
                    // Another process got there first.
                    let _ = drop_database(&mut conn, &build).await;
                    continue;
                }
                sql(format!("ALTER DATABASE \"{name}\" WITH IS_TEMPLATE true")).execute(&mut conn).await.expect("mark");
                // Templates of older migrations.
                let old: Vec<String> = sqlx::query_scalar(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'faceoff\\_template\\_%' AND datname <> $1",
                )
                .bind(&name)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                for old in old {
                    let _ = sql(format!("ALTER DATABASE \"{old}\" WITH IS_TEMPLATE false")).execute(&mut conn).await;
                    // Not forced: another checkout's tests may be copying it right now.
                    let _ = sql(format!("DROP DATABASE IF EXISTS \"{old}\"")).execute(&mut conn).await;
                }
                break;
            }
        }
    }
    conn.close().await.ok();
    name
}

/// A fresh, migrated and seeded database for one test.
pub struct TestDb {
    pub name: String,
    pub options: PgConnectOptions,
}

impl TestDb {
    /// An empty database.
    pub async fn create() -> TestDb {
        Self::create_from("template1").await
    }

    /// A database with every migration applied: a copy of [`migrated_template`], which is
    /// migrated once (a copy takes a tenth of a second; migrating, a second or two).
    pub async fn migrated() -> TestDb {
        Self::create_from(migrated_template()).await
    }

    async fn create_from(template: &str) -> TestDb {
        let base = server_options();
        let name = format!("faceoff_test_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::SeqCst));
        let mut conn =
            PgConnection::connect_with(&base.clone().database("postgres")).await.expect("connect to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        TestDb { options: base.clone().database(&name), name }
    }

    pub fn pool(&self, max_connections: u32) -> PgPool {
        // Tests share one server (and two cores) with each other: wait for a connection as long
        // as it takes rather than fail on a busy machine.
        faceoff::db::pool_options(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(120))
            .connect_lazy_with(faceoff::db::with_slow_statement_log(&self.options))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let base = server_options().clone();
        let name = self.name.clone();
        let _ = on_own_runtime(move || async move {
            if let Ok(mut conn) = PgConnection::connect_with(&base.database("postgres")).await {
                let _ = drop_database(&mut conn, &name).await;
            }
        });
    }
}

pub fn test_config() -> Config {
    let mut config = Config::for_tests();
    let dir = std::env::temp_dir().join(format!(
        "{TEST_DIR_PREFIX}{}-{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    ));
    config.storage_url = format!("file://{}", dir.join("media").display());
    // The whole-route walks send thousands of API requests a minute: tests that check the limits
    // set their own.
    config.api_rate_limit = std::num::NonZeroU32::new(1_000_000);
    config.data_dir = dir;
    config
}

/// A running app over its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The default browser: what `get`, `page` and `signed_in_user` use.
    pub browser: Browser,
    pub pool: PgPool,
    pub state: AppState,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    pub db: TestDb,
    data_dir: DataDir,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns the app with a configuration adjusted by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> TestApp {
        faceoff::telemetry::init_for_test();
        let mut config = test_config();
        configure(&mut config);
        let db = TestDb::migrated().await;
        let pool = db.pool(10);
        server::prepare_database(&pool, &config).await.expect("prepare test database");
        let data_dir = DataDir(config.data_dir.clone());
        Self::start(db, pool, config, data_dir).await
    }

    /// Spawns the app over `db`, an existing (empty) database: for tests that set something up
    /// on the database (a role, a grant) before the app starts.
    pub async fn spawn_over(db: TestDb, configure: impl FnOnce(&mut Config)) -> TestApp {
        faceoff::telemetry::init_for_test();
        let mut config = test_config();
        configure(&mut config);
        let pool = db.pool(10);
        server::prepare_database(&pool, &config).await.expect("prepare test database");
        let data_dir = DataDir(config.data_dir.clone());
        Self::start(db, pool, config, data_dir).await
    }

    async fn start(db: TestDb, pool: PgPool, config: Config, data_dir: DataDir) -> TestApp {
        let state = AppState::new(pool.clone(), config).await.expect("app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        // The mail sender, as `serve` runs it (the other background tasks are started by the
        // tests that need them).
        let sender =
            faceoff::mail::Sender::new(pool.clone(), &state.config.mail, &state.config.data_dir).expect("mail sender");
        sender.spawn(state.shutdown.clone());
        let app = faceoff::app(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move { signal.cancelled().await })
                .await
                .expect("server");
        });
        let browser = Browser::new(addr);
        TestApp { addr, browser, pool, state, shutdown, server: Some(server), db, data_dir }
    }

    /// Stops the server gracefully (in-flight requests finish) and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        // As in `serve`: background work stops and live (SSE) streams end.
        self.state.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
    }

    /// Stops this server and starts a new one over the same database: a process restart.
    /// The default browser (and its cookies) carries over; it talks to the new address.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let config = (*self.state.config).clone();
        let browser = self.browser.clone();
        let TestApp { db, pool, data_dir, .. } = self;
        let mut app = Self::start(db, pool, config, data_dir).await;
        app.browser = Browser { base: app.browser.base.clone(), ..browser };
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GETs `path` with the default browser.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.browser.get(path).await
    }

    /// GETs a page with the default browser and parses it; asserts it is HTML.
    pub async fn page(&self, path: &str) -> (StatusCode, Page) {
        self.browser.page(path).await
    }
}

/// The password of every user made by [`TestApp::create_user`].
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// The argon2id hash of [`TEST_PASSWORD`], computed once per test binary.
async fn test_password_hash() -> String {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_init(|| async { faceoff::accounts::password::hash(TEST_PASSWORD.into()).await.expect("hash") })
        .await
        .clone()
}

/// A user created directly in the database (no HTTP), for tests of other features.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: uuid::Uuid,
    pub email: String,
    pub password: String,
}

impl TestApp {
    /// Creates a user with `credits` sign-up credits directly in the database. Their password is
    /// [`TEST_PASSWORD`] (really: the log-in form accepts it).
    pub async fn create_user(&self, email: &str, credits: i64) -> TestUser {
        let password = TEST_PASSWORD.to_string();
        let hash = test_password_hash().await;
        let mut tx = faceoff::db::begin(&self.pool).await.expect("begin");
        let id = faceoff::accounts::create_user(&mut tx, email, &hash, faceoff::accounts::Role::User, credits)
            .await
            .expect("create user");
        tx.commit().await.expect("commit");
        TestUser { id, email: email.to_string(), password }
    }

    /// Creates a user with `credits` credits and signs the default browser in as them, through
    /// the log-in form.
    pub async fn signed_in_user(&self, credits: i64) -> TestUser {
        let email = format!("user{}@example.com", NEXT_DB.fetch_add(1, Ordering::SeqCst));
        let user = self.create_user(&email, credits).await;
        self.browser.sign_in(&user).await;
        user
    }
}

/// A fresh database, migrated and seeded as the app would, without an app: for tests of the
/// modules underneath.
pub async fn migrated_db(max_connections: u32) -> (TestDb, PgPool) {
    faceoff::telemetry::init_for_test();
    let db = TestDb::migrated().await;
    let pool = db.pool(max_connections);
    server::prepare_database(&pool, &test_config()).await.expect("prepare test database");
    (db, pool)
}

/// Creates a user `email` with `credits` sign-up credits in `pool` ([`TEST_PASSWORD`]).
pub async fn create_user_in(pool: &PgPool, email: &str, credits: i64) -> TestUser {
    let hash = test_password_hash().await;
    let mut tx = faceoff::db::begin(pool).await.expect("begin");
    let id = faceoff::accounts::create_user(&mut tx, email, &hash, faceoff::accounts::Role::User, credits)
        .await
        .expect("create user");
    tx.commit().await.expect("commit");
    TestUser { id, email: email.to_string(), password: TEST_PASSWORD.to_string() }
}

/// Creates a user with `credits` sign-up credits in `pool` (a random email, [`TEST_PASSWORD`]);
/// returns their id. For tests that have a pool but no app.
pub async fn user_with_credits(pool: &PgPool, credits: i64) -> uuid::Uuid {
    let email = format!("{}@example.com", uuid::Uuid::new_v4());
    let hash = test_password_hash().await;
    let mut tx = faceoff::db::begin(pool).await.expect("begin");
    let id = faceoff::accounts::create_user(&mut tx, &email, &hash, faceoff::accounts::Role::User, credits)
        .await
        .expect("create user");
    tx.commit().await.expect("commit");
    id
}

/// One simulated person's browser: its own cookie jar (session and CSRF cookies), no automatic
/// redirects (tests assert them), and forms submitted the way a browser does: with the CSRF
/// token of the page the form is on.
#[derive(Clone)]
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<Jar>,
    base: String,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Browser {
        let (client, jar) = new_client();
        Browser { client, jar, base: format!("http://{addr}") }
    }

    /// A browser that sends `name: value` with every request (a proxy's client-address header).
    pub fn with_header(addr: SocketAddr, name: &str, value: &str) -> Browser {
        let jar = Arc::new(Jar::default());
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            reqwest::header::HeaderValue::from_str(value).expect("header value"),
        );
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(Policy::none())
            .default_headers(headers)
            .build()
            .expect("client");
        Browser { client, jar, base: format!("http://{addr}") }
    }

    /// The same browser (same cookies) talking to another server: cookies are per host, not
    /// per port, so a session made on one instance is sent to another on the same host.
    pub fn at(&self, addr: SocketAddr) -> Browser {
        Browser { client: self.client.clone(), jar: self.jar.clone(), base: format!("http://{addr}") }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// GETs a page and parses it; asserts it is HTML.
    pub async fn page(&self, path: &str) -> (StatusCode, Page) {
        let response = self.get(path).await;
        let status = response.status();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = response.text().await.expect("body");
        assert!(content_type.starts_with("text/html"), "{path}: expected HTML, got {content_type}: {body}");
        (status, Page::parse(&body))
    }

    /// POSTs `form` as it is (no token added): for forged or malformed submissions.
    pub async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client.post(self.url(path)).form(form).send().await.expect("POST")
    }

    /// POSTs a multipart form as it is (no token added): the caller puts in the fields the page's
    /// form carries (see [`Form::on`]).
    pub async fn post_multipart(&self, path: &str, form: reqwest::multipart::Form) -> reqwest::Response {
        self.client.post(self.url(path)).multipart(form).send().await.expect("POST multipart")
    }

    /// The form posting to `action` on the page at `page`, as this browser loads it.
    pub async fn form(&self, page: &str, action: &str) -> Form {
        let (_, loaded) = self.page(page).await;
        Form::on(&loaded, action)
    }

    /// The CSRF token of the form posting to `action` on the page at `path` (any form when
    /// `action` is `None`).
    pub async fn token(&self, path: &str, action: Option<&str>) -> String {
        let (_, page) = self.page(path).await;
        let selector = match action {
            Some(action) => format!("form[action=\"{action}\"] input[name=csrf_token]"),
            None => "input[name=csrf_token]".to_string(),
        };
        page.attr(&selector, "value").unwrap_or_else(|| panic!("{path} has no form with a csrf_token ({selector})"))
    }

    /// Submits the form posting to `action` found on the page at `page`, with `fields` and the
    /// page's CSRF token, as a browser would.
    pub async fn submit(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.form(page, action).await.submit(self, fields).await
    }

    /// Submits the sign-up form (whatever the outcome).
    pub async fn submit_sign_up(&self, email: &str, password: &str) -> reqwest::Response {
        self.submit("/signup", "/signup", &[("email", email), ("password", password)]).await
    }

    /// Signs up through the sign-up form and, when it was accepted (sign-up no longer signs in:
    /// it answers "check your inbox" whether or not the address is new), logs in with the same
    /// email and password, so the browser is signed in as a new, unverified user. Returns the
    /// log-in's answer, or the sign-up's when it was refused.
    pub async fn sign_up(&self, email: &str, password: &str) -> reqwest::Response {
        let response = self.submit_sign_up(email, password).await;
        if response.status() != StatusCode::SEE_OTHER {
            return response;
        }
        assert!(location(&response).starts_with("/signup/check-email"), "{}", location(&response));
        self.log_in(email, password).await
    }

    /// Logs in through the log-in form; asserts it worked.
    pub async fn sign_in(&self, user: &TestUser) {
        let response = self.log_in(&user.email, &user.password).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "log-in of {} failed", user.email);
    }

    /// Submits the log-in form (whatever the outcome).
    pub async fn log_in(&self, email: &str, password: &str) -> reqwest::Response {
        self.submit("/login", "/login", &[("email", email), ("password", password)]).await
    }

    /// The value of this browser's cookie `name`, if it has one.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let url: reqwest::Url = self.url("/").parse().expect("url");
        let header = self.jar.cookies(&url)?;
        header.to_str().ok()?.split("; ").find_map(|c| c.strip_prefix(&format!("{name}="))).map(str::to_string)
    }

    /// Puts cookie `name` in this browser's jar, as if a server (or an attacker) had set it.
    pub fn add_cookie(&self, name: &str, value: &str) {
        let url: reqwest::Url = self.url("/").parse().expect("url");
        self.jar.add_cookie_str(&format!("{name}={value}; Path=/"), &url);
    }

    /// Whether the header shows a signed-in user.
    pub async fn is_signed_in(&self) -> bool {
        let (_, page) = self.page("/").await;
        page.count("[data-testid=balance]") == 1
    }
}

impl TestApp {
    /// A new browser with no cookies.
    pub fn browser(&self) -> Browser {
        Browser::new(self.addr)
    }

    /// Checks every ledger invariant (`ledger::check_invariants`) and fails the test with the
    /// violations.
    pub async fn assert_invariants(&self) {
        assert_ledger_invariants(&self.pool).await;
    }
}

/// A form as a browser tab holds it after loading its page: where it posts and the CSRF token
/// it was rendered with. Submitting it again later (a double click, the back button, a tab left
/// open) sends that same token.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub token: String,
}

impl Form {
    /// The form posting to `action` on `page`; panics when the page has none.
    pub fn on(page: &Page, action: &str) -> Form {
        let selector = format!("form[action=\"{action}\"] input[name=csrf_token]");
        let token = page.attr(&selector, "value").unwrap_or_else(|| panic!("no form posting to {action} ({selector})"));
        Form { action: action.to_string(), token }
    }

    /// Submits this form from `browser` with `fields` and the form's token.
    pub async fn submit(&self, browser: &Browser, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &self.token));
        browser.post_raw(&self.action, &form).await
    }
}

/// The `Location` header of a response ("" when it has none).
pub fn location(response: &reqwest::Response) -> String {
    response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// See [`TestApp::assert_invariants`]; for tests that have a pool but no app.
pub async fn assert_ledger_invariants(pool: &PgPool) {
    let mut conn = pool.acquire().await.expect("connection");
    let report = faceoff::ledger::check_invariants(&mut conn).await.expect("check");
    assert!(report.is_ok(), "ledger invariants violated: {:?}", report.violations);
}

/// A client that keeps cookies and does not follow redirects (tests assert them).
pub fn new_client() -> (reqwest::Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let client =
        reqwest::Client::builder().cookie_provider(jar.clone()).redirect(Policy::none()).build().expect("client");
    (client, jar)
}

/// A parsed HTML page with small query helpers.
pub struct Page {
    pub html: Html,
    pub source: String,
}

impl Page {
    pub fn parse(source: &str) -> Page {
        Page { html: Html::parse_document(source), source: source.to_string() }
    }

    /// Reads and parses a response's body (whatever its status).
    pub async fn from_response(response: reqwest::Response) -> Page {
        Page::parse(&response.text().await.expect("body"))
    }

    fn selector(css: &str) -> Selector {
        Selector::parse(css).unwrap_or_else(|e| panic!("bad selector {css}: {e}"))
    }

    /// Text of the first element matching `css`, whitespace-collapsed.
    pub fn text(&self, css: &str) -> Option<String> {
        self.html
            .select(&Self::selector(css))
            .next()
            .map(|el| el.text().collect::<Vec<_>>().join(" ").split_whitespace().collect::<Vec<_>>().join(" "))
    }

    pub fn texts(&self, css: &str) -> Vec<String> {
        self.html
            .select(&Self::selector(css))
            .map(|el| el.text().collect::<Vec<_>>().join(" ").split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    pub fn attr(&self, css: &str, attr: &str) -> Option<String> {
        self.html.select(&Self::selector(css)).next().and_then(|el| el.value().attr(attr)).map(str::to_string)
    }

    pub fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        self.html.select(&Self::selector(css)).filter_map(|el| el.value().attr(attr)).map(str::to_string).collect()
    }

    pub fn count(&self, css: &str) -> usize {
        self.html.select(&Self::selector(css)).count()
    }

    /// Structural checks every page must pass: it parsed without errors, has one `<main>`, one
    /// `<h1>`, a non-empty title, `lang` on `<html>`, labelled form controls, and `alt` on images.
    pub fn assert_well_formed(&self, what: &str) {
        let errors: Vec<_> = self.html.errors.iter().filter(|e| !e.contains("Unexpected token")).collect();
        assert!(errors.is_empty(), "{what}: HTML parse errors {errors:?}");
        assert!(self.source.trim_start().to_ascii_lowercase().starts_with("<!doctype html>"), "{what}: no doctype");
        assert_eq!(self.count("html[lang]"), 1, "{what}: <html lang> missing");
        assert_eq!(self.count("main"), 1, "{what}: expected one <main>");
        assert_eq!(self.count("h1"), 1, "{what}: expected one <h1>");
        assert!(self.text("title").is_some_and(|t| !t.is_empty()), "{what}: empty <title>");
        assert_eq!(self.count("img:not([alt])"), 0, "{what}: images without alt");
        for id in self.attrs("input:not([type=hidden]):not([type=submit]), select, textarea", "id") {
            assert!(self.count(&format!("label[for=\"{id}\"]")) > 0, "{what}: control #{id} has no label");
        }
        assert_eq!(
            self.count("input:not([type=hidden]):not([type=submit]):not([id]), select:not([id]), textarea:not([id])"),
            self.count("label input:not([type=hidden]):not([id]), label select:not([id]), label textarea:not([id])"),
            "{what}: a form control has neither an id with a <label for> nor a wrapping <label>"
        );
        let ids = self.attrs("[id]", "id");
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            assert!(seen.insert(id), "{what}: duplicate id {id}");
        }
    }
}

/// Waits (30 s at most: a sandbox job takes a second or two, and the tests' workers hold a
/// 30 s lease, so a job lost by its worker is not quietly retried in time) until every job of
/// `run_id` is settled; returns them. See [`settled_within`].
pub async fn wait_until_settled(pool: &PgPool, run_id: uuid::Uuid) -> Vec<faceoff::jobs::Job> {
    settled_within(pool, run_id, std::time::Duration::from_secs(30)).await
}

/// Waits until every job of `run_id` is settled, `within` at most; returns them. On a timeout
/// the panic says what every session of the test's database was doing (state, what it waits
/// on, how long its transaction is open, its statement) and which locks are not granted: a job
/// stuck `running` is a lock wait or a worker that lost it, and the report tells which.
pub async fn settled_within(pool: &PgPool, run_id: uuid::Uuid, within: std::time::Duration) -> Vec<faceoff::jobs::Job> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let jobs = faceoff::jobs::for_run(pool, run_id).await.expect("jobs");
        if !jobs.is_empty() && jobs.iter().all(|j| j.status().is_settled()) {
            return jobs;
        }
        if std::time::Instant::now() >= deadline {
            panic!("jobs did not settle: {jobs:#?}\n{}", database_activity(pool).await);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What the sessions of `pool`'s database are doing, and the locks they wait for (a test's
/// failure report).
pub async fn database_activity(pool: &PgPool) -> String {
    let sessions = sqlx::query_scalar::<_, String>(
        "SELECT format('  %s %s %s %s %s', pid, state, wait_event_type || ':' || wait_event,
                       round(extract(epoch FROM now() - xact_start), 3), left(regexp_replace(query, '\\s+', ' ', 'g'), 300))
         FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(pool)
    .await;
    let waiting = sqlx::query_scalar::<_, String>(
        "SELECT format('  %s %s %s %s', l.pid, l.locktype || ' ' || l.mode, l.relation::regclass, pg_blocking_pids(l.pid))
         FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE NOT l.granted AND d.datname = current_database()",
    )
    .fetch_all(pool)
    .await;
    let lines = |rows: Result<Vec<String>, sqlx::Error>| match rows {
        Ok(rows) => rows.join("\n"),
        Err(err) => format!("  (unreadable: {err})"),
    };
    format!(
        "sessions of the test database (pid, state, wait, transaction age s, query):\n{}\n\
         locks waited for (pid, lock, relation, blocked by):\n{}",
        lines(sessions),
        lines(waiting)
    )
}
