//! Running the process: preparing the database, serving HTTP, running background tasks, and
//! shutting all of it down gracefully on SIGINT/SIGTERM.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use tower_sessions::session_store::ExpiredDeletion;

use crate::{
    accounts::session_store::PgSessionStore, catalog, config::Config, db, jobs, ledger, state::AppState, storage,
};

/// The catalog file loaded at every start and by `faceoff catalog load` without a path:
/// `FACEOFF_CATALOG_FILE`, else `catalog/catalog.toml` next to the assets.
pub fn catalog_path(config: &Config) -> PathBuf {
    config.catalog_file.clone().unwrap_or_else(|| crate::config::locate_dir("catalog").join("catalog.toml"))
}

/// Migrates the database and loads the seed data (idempotent; run at every start). The catalog
/// comes from [`catalog_path`] (so an edited file applies at the next start); when that is the
/// default and the file is missing, from the copy compiled into the binary. A configured
/// `FACEOFF_CATALOG_FILE` must be readable.
pub async fn prepare_database(pool: &PgPool, config: &Config) -> anyhow::Result<()> {
    db::migrate(pool).await?;
    let path = catalog_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => catalog::db::load(pool, &text, &path.display().to_string()).await?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && config.catalog_file.is_none() => {
            catalog::db::load(pool, catalog::CATALOG_TOML, catalog::CATALOG_PATH).await?
        }
        Err(err) if config.catalog_file.is_some() => {
            return Err(err).with_context(|| format!("reading FACEOFF_CATALOG_FILE={}", path.display()));
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    Ok(())
}

/// Connects (or starts a private cluster), creates and prepares the database. The returned
/// server must be kept alive, and `stop()`ped at exit, for as long as the pool is used.
pub async fn connect(config: &Config) -> anyhow::Result<(db::Server, PgPool)> {
    let server = db::locate(config).await?;
    db::create_database_if_missing(&server.options).await?;
    let pool = db::pool(&server.options, 20);
    Ok((server, pool))
}

/// Runs `work` with a pool on the database (connecting, or starting a private cluster, first),
/// then closes the pool and stops the private cluster if this process started it, whatever
/// `work` returned. Every subcommand that needs the database goes through here.
pub async fn with_database<T, F, Fut>(config: &Config, work: F) -> anyhow::Result<T>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (server, pool) = connect(config).await?;
    let result = work(pool.clone()).await;
    // `close()` waits for every connection to come back; one that never does (a task stuck on
    // it) must not keep the process from exiting.
    if tokio::time::timeout(POOL_CLOSE_TIMEOUT, pool.close()).await.is_err() {
        tracing::warn!(
            in_use = connections_in_use(&pool),
            "database connections still in use {POOL_CLOSE_TIMEOUT:?} after shutdown; exiting without them"
        );
    }
    if let Some(cluster) = &server.cluster {
        cluster.stop();
    }
    result
}

/// Connections of `pool` checked out right now.
fn connections_in_use(pool: &PgPool) -> u32 {
    pool.size().saturating_sub(pool.num_idle() as u32)
}

/// How long shutdown waits for database connections to be returned to the pool.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for the background tasks (workers, housekeeping) to stop.
const BACKGROUND_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a graceful shutdown takes after SIGTERM: in-flight requests (each bounded by
/// [`crate::app::REQUEST_TIMEOUT`]), then the background tasks, then the pool. An orchestrator
/// must give the process at least this long before it kills it (`stop_grace_period` in
/// `docker-compose.yml`, `terminationGracePeriodSeconds` on Kubernetes, `docker stop -t`).
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(
    crate::app::REQUEST_TIMEOUT.as_secs() + BACKGROUND_STOP_TIMEOUT.as_secs() + POOL_CLOSE_TIMEOUT.as_secs(),
);

/// Waits for the background tasks to stop, and aborts those that take longer than
/// [`BACKGROUND_STOP_TIMEOUT`] in all: a stuck task must neither hold up the exit nor keep
/// connections out of the pool, whose `close()` waits for every connection to come back.
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + BACKGROUND_STOP_TIMEOUT;
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!("a background task did not stop within {BACKGROUND_STOP_TIMEOUT:?}; aborting it");
            task.abort();
            let _ = task.await;
        }
    }
}

/// `faceoff serve`: the web app, plus the background tasks (and workers) of this process.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    with_database(&config.clone(), |pool| async move {
        prepare_database(&pool, &config).await?;
        let addr = config.addr;
        let state = AppState::new(pool.clone(), config).await?;
        // Cancelled on SIGINT/SIGTERM: stops workers and ends live (SSE) streams so the graceful
        // shutdown does not wait on them.
        let shutdown = state.shutdown.clone();
        let tasks = spawn_background(&state, shutdown.clone());
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr} (FACEOFF_ADDR)"))?;
        let mut tasks = tasks;
        tasks.extend(serve_metrics(&state, shutdown.clone()).await);
        tracing::info!("listening on http://{} (public URL {})", listener.local_addr()?, state.config.public_url);
        let signal = shutdown.clone();
        axum::serve(listener, crate::app::app(state).into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing in-flight requests");
                signal.cancel();
            })
            .await?;
        shutdown.cancel();
        join_all(tasks).await;
        tracing::info!(connections_in_use = connections_in_use(&pool), "requests and background tasks finished");
        Ok(())
    })
    .await
}

/// `faceoff worker`: generation workers (and housekeeping) without the web server, until
/// SIGINT/SIGTERM; running jobs are then given back to the queue.
pub async fn worker(config: Config) -> anyhow::Result<()> {
    with_database(&config.clone(), |pool| async move {
        prepare_database(&pool, &config).await?;
        if config.workers == 0 {
            anyhow::bail!("FACEOFF_WORKERS=0: a worker process needs at least one worker");
        }
        let state = AppState::new(pool.clone(), config).await?;
        let shutdown = state.shutdown.clone();
        let mut tasks = spawn_background(&state, shutdown.clone());
        tasks.extend(serve_metrics(&state, shutdown.clone()).await);
        tracing::info!("worker process running; stop with Ctrl-C or SIGTERM");
        shutdown_signal().await;
        tracing::info!("shutting down: releasing running jobs");
        shutdown.cancel();
        join_all(tasks).await;
        Ok(())
    })
    .await
}

/// Serves `/metrics` on `FACEOFF_METRICS_ADDR` until `shutdown` (nothing when it is `off`). An
/// address already taken (another instance on this host) is logged, not fatal.
async fn serve_metrics(state: &AppState, shutdown: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let addr = state.config.metrics_addr?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!("metrics are not served: binding {addr} (FACEOFF_METRICS_ADDR): {err}");
            return None;
        }
    };
    tracing::info!("metrics on http://{addr}/metrics");
    let router = crate::app::metrics_router(state.clone());
    Some(tokio::spawn(async move {
        let served =
            axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(err) = served {
            tracing::warn!("metrics listener: {err}");
        }
    }))
}

/// Where `faceoff health` asks by default: `/readyz` on `FACEOFF_ADDR` (or, with `metrics`, on
/// `FACEOFF_METRICS_ADDR`; `None` when that is `off`), on loopback when the address is
/// unspecified (`0.0.0.0`, `[::]`).
pub fn readiness_url(config: &Config, metrics: bool) -> Option<String> {
    let addr = if metrics { config.metrics_addr? } else { config.addr };
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(format!("http://{}/readyz", SocketAddr::new(ip, addr.port())))
}

/// Asks `url` once, within `timeout`, ignoring proxy settings: `Ok` with the answer when it is a
/// 200, `Err` with the status and body, or why nothing answered, otherwise.
pub async fn probe(url: &str, timeout: Duration) -> Result<String, String> {
    fn chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| chain(&err))?;
    let response = client.get(url).send().await.map_err(|err| format!("no answer: {}", chain(&err)))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(200).collect();
    let answer = format!("{status} {body}");
    if status == reqwest::StatusCode::OK { Ok(answer) } else { Err(answer) }
}

/// `faceoff migrate`: only the migrations.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    with_database(&config, |pool| async move { db::migrate(&pool).await }).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Background tasks shared by `serve` and `worker`: the generation worker pool
/// (`FACEOFF_WORKERS`, none when 0) and periodic housekeeping (expired holds and sessions,
/// stored objects no row owns).
pub fn spawn_background(state: &AppState, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = jobs::spawn_workers(
        state.pool.clone(),
        state.store.clone(),
        state.providers.clone(),
        jobs::WorkerOptions::from_config(&state.config),
        shutdown.clone(),
    );
    tasks.push(state.catalog.spawn_listener(state.pool.clone(), shutdown.clone()));
    tasks.push(state.pages.spawn_listener(state.pool.clone(), shutdown.clone()));
    tasks.push(state.api_keys.spawn_listener(state.pool.clone(), shutdown.clone()));
    // Webhook deliveries (every process sends its share: claims skip locked rows).
    match crate::webhooks::Deliverer::new(state.pool.clone(), state.config.webhooks) {
        Ok(deliverer) => tasks.extend(deliverer.spawn(shutdown.clone())),
        Err(err) => tracing::error!("webhook deliveries are off: {err:#}"),
    }
    // Mail (every process sends its share: claims skip locked rows).
    match crate::mail::Sender::new(state.pool.clone(), &state.config.mail, &state.config.data_dir) {
        Ok(sender) => tasks.extend(sender.spawn(shutdown.clone())),
        Err(err) => tracing::error!("mail sending is off: {err:#}"),
    }
    // Showcase images of the comparison pages: generated once (across all instances), early;
    // stopped at shutdown (the claim of the one being generated is given back).
    let (showcases, catalog, showcase_shutdown) = (state.showcases.clone(), state.catalog.clone(), shutdown.clone());
    tasks.push(tokio::spawn(async move {
        showcases.generate_all(&catalog.current(), &showcase_shutdown).await;
    }));
    let pool = state.pool.clone();
    let sessions = PgSessionStore::new(state.pool.clone());
    let throttle = state.throttle.clone();
    let api_limits = state.api_limits.clone();
    let housekeeping_shutdown = shutdown.clone();
    let housekeeping = tokio::spawn(async move {
        let shutdown = housekeeping_shutdown;
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(err) = ledger::sweep_expired(&pool).await {
                tracing::warn!("hold sweeper: {err}");
            }
            if let Err(err) = sessions.delete_expired().await {
                tracing::warn!("session cleanup: {err}");
            }
            if let Err(err) = crate::mail::purge_old(&pool).await {
                tracing::warn!("mail outbox cleanup: {err}");
            }
            if let Err(err) = crate::accounts::tokens::purge_old(&pool).await {
                tracing::warn!("account token cleanup: {err}");
            }
            // Also purges the expired shared counters (PostgreSQL store).
            throttle.retain_recent().await;
            api_limits.retain_recent();
        }
    });
    tasks.push(housekeeping);
    // The arena's boards: checked every 30 s, recomputed when due (every
    // `FACEOFF_ARENA_RECOMPUTE_SECS`, or after 20 new votes), by one process at a time.
    let (pool, catalog, arena, shutdown_arena) =
        (state.pool.clone(), state.catalog.clone(), state.config.arena, shutdown.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown_arena.cancelled() => break,
                _ = tick.tick() => {}
            }
            match crate::arena::board::due(&pool, &arena).await {
                Ok(false) => {}
                Ok(true) => {
                    if let Err(err) = crate::arena::board::recompute(&pool, &catalog.current(), &arena).await {
                        tracing::warn!("arena recompute: {err:#}");
                    }
                }
                Err(err) => tracing::warn!("arena recompute check: {err}"),
            }
        }
    }));
    // Stored objects that no row owns (a transaction that failed after storing its bytes), once
    // an hour. Several instances may sweep at once: deleting an object twice is harmless.
    let (pool, store, shutdown) = (state.pool.clone(), state.store.clone(), shutdown.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let swept = tokio::select! {
                _ = shutdown.cancelled() => break,
                swept = storage::sweep_orphans(&pool, &store, storage::ORPHAN_GRACE) => swept,
            };
            match swept {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "orphaned stored objects deleted"),
                Err(err) => tracing::warn!("storage sweep: {err:#}"),
            }
        }
    }));
    tasks
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
