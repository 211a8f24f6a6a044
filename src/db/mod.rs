//! The database: finding a PostgreSQL server (the configured one, a local default, or a private
//! cluster started under the data directory), creating the application database, running the
//! migrations, building the connection pool, starting transactions safely ([`begin`]) and following
//! `NOTIFY` channels over one shared connection ([`listen`], [`notifications`]).

pub mod notifications;

use std::{
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
    time::Duration,
};

use anyhow::{Context, bail};
use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Config;

/// Where the database lives, and the private cluster to stop on exit if we started one.
#[derive(Debug)]
pub struct Server {
    /// Options pointing at the application database.
    pub options: PgConnectOptions,
    pub cluster: Option<PrivateCluster>,
}

impl Server {
    /// Options for another database on the same server (used by tests and `CREATE DATABASE`).
    pub fn database(&self, name: &str) -> PgConnectOptions {
        self.options.clone().database(name)
    }
}

/// Resolves where to connect: `DATABASE_URL` if set (waiting for it to answer for a bounded time),
/// otherwise a local server on the usual socket/port, otherwise a private cluster.
pub async fn locate(config: &Config) -> anyhow::Result<Server> {
    if let Some(url) = &config.database_url {
        let options = PgConnectOptions::from_str(url.expose())
            .context("DATABASE_URL is not a valid PostgreSQL URL (expected postgres://user@host:port/dbname)")?;
        let options = if options.get_database().is_none() { options.database("faceoff") } else { options };
        wait_for_server(&options, config.db_wait).await?;
        return Ok(Server { options, cluster: None });
    }

    // PgConnectOptions::new() honours PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE.
    let mut defaults = PgConnectOptions::new();
    if std::env::var_os("PGUSER").is_none()
        && let Some(user) = current_os_user()
    {
        defaults = defaults.username(&user);
    }
    let database = std::env::var("PGDATABASE").unwrap_or_else(|_| "faceoff".into());
    let local = defaults.database(&database);
    match probe(&local).await {
        Probe::Answers => {
            return Ok(Server { options: local, cluster: None });
        }
        Probe::Refused(err) => {
            tracing::info!(
                host = local.get_host(),
                port = local.get_port(),
                "no local PostgreSQL answers ({err}); looking for server binaries to start a private cluster"
            );
        }
        Probe::Rejected(err) => {
            bail!(
                "the local PostgreSQL at {}:{} rejected user {:?}: {err}. Set DATABASE_URL (for example postgres://postgres@localhost:5432/faceoff) or PGUSER.",
                local.get_host(),
                local.get_port(),
                local.get_username()
            );
        }
    }

    let Some(bin) = find_pg_bin() else {
        bail!(
            "no PostgreSQL server answers on {}:{} and no PostgreSQL server binaries (initdb, pg_ctl) were found.\n\
             Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`), \
             or start one with Docker: `docker compose up -d db` and set DATABASE_URL=postgres://postgres:postgres@localhost:5432/faceoff",
            local.get_host(),
            local.get_port()
        );
    };
    let cluster = PrivateCluster::start(&bin, &crate::config::absolute(&config.data_dir.join("postgres")))?;
    let options = cluster.options().database(&database);
    wait_for_server(&options, Duration::from_secs(30)).await?;
    Ok(Server { options, cluster: Some(cluster) })
}

enum Probe {
    Answers,
    /// Nothing listens (connection refused, no socket): try something else.
    Refused(String),
    /// A server answered but refused us (auth, unknown role): report it.
    Rejected(String),
}

async fn probe(options: &PgConnectOptions) -> Probe {
    let maintenance = options.clone().database("postgres");
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect_with(&maintenance)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Probe::Answers
        }
        Ok(Err(sqlx::Error::Io(err))) => Probe::Refused(err.to_string()),
        Ok(Err(err @ sqlx::Error::Tls(_))) => Probe::Refused(err.to_string()),
        Ok(Err(err)) => Probe::Rejected(err.to_string()),
        Err(_) => Probe::Refused("timed out".into()),
    }
}

/// Waits, with exponential backoff up to `budget`, until the server accepts a connection to its
/// maintenance database, logging what it waits for.
async fn wait_for_server(options: &PgConnectOptions, budget: Duration) -> anyhow::Result<()> {
    let maintenance = options.clone().database("postgres");
    let deadline = tokio::time::Instant::now() + budget;
    let mut delay = Duration::from_millis(100);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&maintenance)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Ok(Err(err)) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(
                    host = options.get_host(),
                    port = options.get_port(),
                    "waiting for PostgreSQL: {err}; retrying in {delay:?}"
                );
            }
            Err(_) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(
                    host = options.get_host(),
                    "waiting for PostgreSQL: connect timed out; retrying in {delay:?}"
                );
            }
            Ok(Err(err)) => {
                bail!(
                    "PostgreSQL at {}:{} did not answer within {budget:?}: {err}",
                    options.get_host(),
                    options.get_port()
                )
            }
            Err(_) => {
                bail!("PostgreSQL at {}:{} did not answer within {budget:?}", options.get_host(), options.get_port())
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(3));
    }
}

/// Creates the database named in `options` if it does not exist yet.
pub async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options.get_database().unwrap_or("faceoff").to_string();
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .context("connecting to the maintenance database `postgres`")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it at the same moment.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(err) => return Err(err).context(format!("creating database {name}")),
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// The pool of the pages that read only the catalog and its public boards (comparison, home,
/// leaderboards): a read replica when `DATABASE_READ_URL` is set, otherwise the primary's pool.
/// A separate type so a handler's choice is explicit: every write, and every read of user or
/// ledger data, goes through the primary `PgPool`; what may lag a replica by a few seconds
/// (published boards) goes through this one.
#[derive(Clone, Debug)]
pub struct ReadPool(PgPool);

impl ReadPool {
    /// The replica at `DATABASE_READ_URL` (connected lazily), or `primary` when it is unset.
    pub fn from_config(config: &Config, primary: &PgPool) -> anyhow::Result<ReadPool> {
        match &config.database_read_url {
            None => Ok(ReadPool(primary.clone())),
            Some(url) => {
                let options = PgConnectOptions::from_str(url.expose()).context("DATABASE_READ_URL")?;
                Ok(ReadPool(pool(&options, 10)))
            }
        }
    }

    /// The pool to read from (pass it as the executor of a read-only query).
    pub fn get(&self) -> &PgPool {
        &self.0
    }
}

/// Builds the application's pool. Connections are made lazily, so a pool outlives database
/// outages: `/readyz` fails while the server is down and recovers when it is back.
pub fn pool(options: &PgConnectOptions, max_connections: u32) -> PgPool {
    pool_options(max_connections).connect_lazy_with(with_slow_statement_log(options))
}

/// The pool settings [`pool`] uses, for callers that need to adjust one (tests wait longer for
/// a connection on a busy machine).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
}

/// Logs statements slower than 500 ms as warnings.
pub fn with_slow_statement_log(options: &PgConnectOptions) -> PgConnectOptions {
    options.clone().log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500))
}

/// Begins a transaction on a pooled connection; use it instead of `pool.begin()` (clippy
/// enforces this).
///
/// sqlx 0.9.0 leaks a server-side transaction when the future of `pool.begin()` is dropped
/// after `BEGIN` is sent but before its answer is read (transact-rs/sqlx#4385): the connection
/// goes back to the pool inside an open transaction, later autocommit statements on it are
/// silently left uncommitted, and its locks are held. Request handlers are dropped whenever a
/// client disconnects or a request times out, so the `BEGIN` runs in a task of its own that
/// finishes it even when the caller is gone; the unused transaction is then rolled back.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)]
    let begin = tokio::spawn(async move { pool.begin().await });
    begin.await.map_err(|_| sqlx::Error::WorkerCrashed)?
}

/// The channel announcing that something public changed (a run published, unpublished or
/// hidden, a new arena snapshot): every instance drops its cached public pages
/// (`web::page_cache`).
pub const PUBLIC_CHANGED: &str = "faceoff_public_changed";

/// Announces on [`PUBLIC_CHANGED`] (delivered when the caller's transaction commits).
pub async fn notify_public_changed(db: impl sqlx::PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')").bind(PUBLIC_CHANGED).execute(db).await?;
    Ok(())
}

/// The application's 32-byte secret called `name` (from `app_secret`), created at random by the
/// first instance that asks: every instance signs with the same key, and restarts keep it.
pub async fn secret_key(pool: &PgPool, name: &str) -> anyhow::Result<[u8; 32]> {
    let candidate: [u8; 32] = rand::random();
    sqlx::query("INSERT INTO app_secret (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(&candidate[..])
        .execute(pool)
        .await
        .with_context(|| format!("creating the secret {name}"))?;
    let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM app_secret WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .with_context(|| format!("reading the secret {name}"))?;
    value.try_into().map_err(|_| anyhow::anyhow!("the secret {name} is not 32 bytes"))
}

/// The migrations embedded in this binary (`migrations/`), in order.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// Runs the embedded migrations (under sqlx's advisory lock: processes starting together never
/// apply one twice).
///
/// Migrations the database has and this binary does not know are allowed: a newer version ran
/// them, and during a rolling deploy (or after a rollback) this older one must still start. That
/// is safe because migrations only expand the schema while a previous version may run (see
/// docs/production.md, "Rolling deploys"); they are logged.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = migrator();
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.context("running database migrations")?;
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let newer: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE version > $1 ORDER BY version")
            .bind(known)
            .fetch_all(pool)
            .await
            .context("reading the applied migrations")?;
    if !newer.is_empty() {
        tracing::warn!(
            ?newer,
            "the database has migrations this version does not know (a newer version applied them); \
             running on the expanded schema"
        );
    }
    Ok(())
}

/// Finds a directory holding `initdb` and `pg_ctl`: `PATH` first, then `/usr/lib/postgresql/*/bin`
/// (newest version first).
pub fn find_pg_bin() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// A PostgreSQL cluster of our own under the data directory, listening only on a Unix socket.
/// Started on demand when no server is configured or running; stopped by [`PrivateCluster::stop`]
/// if this process started it.
#[derive(Debug)]
pub struct PrivateCluster {
    bin: PathBuf,
    dir: PathBuf,
    socket_dir: PathBuf,
    started_here: bool,
    run_as_postgres: bool,
}

impl PrivateCluster {
    fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let run_as_postgres = is_root();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Unix socket paths are limited to ~107 bytes; use a short directory when ours is long.
        let socket_dir = if dir.as_os_str().len() < 80 {
            dir.to_path_buf()
        } else {
            let dir = std::env::temp_dir().join(format!("faceoff-pg-{:x}", hash(dir.as_os_str().as_encoded_bytes())));
            std::fs::create_dir_all(&dir)?;
            dir
        };
        if run_as_postgres {
            chown_to_postgres(dir)?;
            chown_to_postgres(&socket_dir)?;
        }
        let cluster = PrivateCluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            socket_dir,
            started_here: false,
            run_as_postgres,
        };
        let data = dir.join("data");
        if !data.join("PG_VERSION").exists() {
            tracing::info!(dir = %data.display(), "initialising a private PostgreSQL cluster (first run)");
            cluster.run(
                "initdb",
                &["-D", path_str(&data)?, "-A", "trust", "-U", "postgres", "--encoding", "UTF8", "--no-instructions"],
            )?;
        }
        let status = cluster.command("pg_ctl", &["-D", path_str(&data)?, "status"]).output()?;
        if status.status.success() {
            tracing::info!(dir = %data.display(), "using the private PostgreSQL cluster that is already running");
            return Ok(cluster);
        }
        tracing::info!(dir = %data.display(), "starting a private PostgreSQL cluster");
        let opts = format!(
            "-p 5432 -c listen_addresses='' -k {} -c max_connections=200 -c synchronous_commit=off",
            path_str(&cluster.socket_dir)?
        );
        cluster.run(
            "pg_ctl",
            &["-D", path_str(&data)?, "-l", path_str(&dir.join("server.log"))?, "-w", "-o", &opts, "start"],
        )?;
        Ok(PrivateCluster { started_here: true, ..cluster })
    }

    /// Connection options for the cluster's socket, as the `postgres` superuser.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass().socket(&self.socket_dir).username("postgres").port(5432)
    }

    /// Stops the cluster if this process started it.
    pub fn stop(&self) {
        if !self.started_here {
            return;
        }
        let data = self.dir.join("data");
        let Some(data) = data.to_str() else { return };
        match self.run("pg_ctl", &["-D", data, "-m", "fast", "-w", "stop"]) {
            Ok(()) => tracing::info!("stopped the private PostgreSQL cluster"),
            Err(err) => tracing::warn!("could not stop the private PostgreSQL cluster: {err:#}"),
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        if self.run_as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.arg("-u").arg("postgres").arg("--").arg(exe).args(args);
            cmd
        } else {
            let mut cmd = Command::new(exe);
            cmd.args(args);
            cmd
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = self.command(program, args).output().with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| format!("path is not UTF-8: {}", path.display()))
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable short name for the socket directory.
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

/// The name of the user running this process (`USER`, else `LOGNAME`, else `id -un`).
fn current_os_user() -> Option<String> {
    for var in ["USER", "LOGNAME"] {
        if let Ok(user) = std::env::var(var)
            && !user.trim().is_empty()
        {
            return Some(user.trim().to_string());
        }
    }
    let out = Command::new("id").arg("-un").output().ok()?;
    let user = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !user.is_empty()).then_some(user)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn chown_to_postgres(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown").arg("postgres:postgres").arg(dir).status().context("running chown")?;
    if !status.success() {
        bail!("could not give {} to the postgres system user (is PostgreSQL installed?)", dir.display());
    }
    Ok(())
}

/// Is the database reachable right now? Used by `/readyz`.
pub async fn ping(pool: &PgPool) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool)).await,
        Ok(Ok(1))
    )
}

/// Follows `NOTIFY` on `channel` until `shutdown`: calls `on_event(Some(payload))` for each
/// notification and `on_event(None)` once the channel is listened to and after every
/// reconnection, since notifications sent while disconnected are lost and the caller may need to
/// catch up. Every follower of a pool shares one connection ([`notifications`]); `what` names
/// this one in the log.
pub async fn listen<F, Fut>(
    pool: &PgPool,
    channel: &str,
    what: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    mut on_event: F,
) where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use tokio::sync::broadcast::error::RecvError;
    let mut subscription = notifications::subscribe(pool, channel);
    if subscription.live {
        on_event(None).await;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = subscription.events.recv() => match event {
                Ok(notifications::Event::Connected) => on_event(None).await,
                Ok(notifications::Event::Notified(payload)) => on_event(Some(payload)).await,
                // Fell behind the backlog: some notifications are gone, as after a reconnection.
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!("{what}: missed {missed} notifications");
                    on_event(None).await;
                }
                // The subscription keeps the sender alive: not reached.
                Err(RecvError::Closed) => return,
            },
        }
    }
}
