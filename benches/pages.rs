//! Benchmark: the comparison page rendered per request vs the same HTML served as a static
//! file, by the same server through the same middleware stack, under concurrent load.
//!
//! `cargo bench --bench pages` (release). It starts the app in-process on 127.0.0.1:0 over a
//! scratch database, waits for the seed comparison's showcase images, writes the page's HTML
//! to `assets/bench-comparison.html` (served by the app's static-file route), then runs N
//! concurrent connections against each URL for a fixed time and prints requests/s, p50, p99.
//! `BENCH_CONNECTIONS` (64), `BENCH_SECONDS` (10 per URL) and `BENCH_ROUNDS` (5) adjust the
//! load. The two URLs are measured in alternating rounds (seconds / rounds each), so a noisy
//! neighbour on a shared machine affects both alike.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use faceoff::{AppState, config::Config, server};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

const PAGE: &str = "/compare/flux-2-vs-flux-ultra-1-1/portrait";
const STATIC_NAME: &str = "bench-comparison.html";

struct Stats {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

async fn hammer(url: &str, connections: usize, duration: Duration) -> Stats {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                // One client per task: one keep-alive connection each.
                let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match client.get(&url).send().await {
                        Ok(response) if response.status().is_success() => match response.bytes().await {
                            Ok(_) => latencies.push(sent.elapsed()),
                            Err(_) => errors += 1,
                        },
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut stats = Stats { requests: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for task in tasks {
        let (latencies, errors) = task.await.expect("load task");
        stats.requests += latencies.len();
        stats.errors += errors;
        stats.latencies.extend(latencies);
    }
    stats.elapsed = start.elapsed();
    stats.latencies.sort();
    stats
}

fn report(name: &str, s: &Stats) {
    println!(
        "{name:<22} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests, {} errors)",
        s.rps(),
        s.percentile(0.50).as_secs_f64() * 1e3,
        s.percentile(0.99).as_secs_f64() * 1e3,
        s.requests,
        s.errors
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let connections = env_number("BENCH_CONNECTIONS", 64) as usize;
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 10));
    let rounds = env_number("BENCH_ROUNDS", 5).max(1) as u32;
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();

    // A scratch database on the server the app would use.
    let mut config = Config::from_env()?;
    let scratch = std::env::temp_dir().join(format!("faceoff-bench-{}", std::process::id()));
    config.storage_url = format!("file://{}", scratch.join("media").display());
    config.data_dir = scratch.clone();
    config.sandbox_latency = Duration::ZERO;
    let db_server = faceoff::db::locate(&config).await?;
    let name = format!("faceoff_bench_{}", std::process::id());
    let mut admin = PgConnection::connect_with(&db_server.options.clone().database("postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await?;
    let options = db_server.options.clone().database(&name);
    let pool = faceoff::db::pool(&options, 20);

    let static_path: PathBuf = faceoff::config::locate_dir("assets").join(STATIC_NAME);
    let result = async {
        server::prepare_database(&pool, &config).await?;
        let state = AppState::new(pool.clone(), config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let app = faceoff::app(state);
        let serving = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move { signal.cancelled().await })
                .await
        });

        // Wait for the showcase images, then freeze the page as a static file.
        let client = reqwest::Client::new();
        let page_url = format!("http://{addr}{PAGE}");
        let deadline = Instant::now() + Duration::from_secs(120);
        let html = loop {
            let html = client.get(&page_url).send().await?.error_for_status()?.text().await?;
            if html.matches("loading=\"lazy\"").count() >= 2 {
                break html;
            }
            anyhow::ensure!(Instant::now() < deadline, "showcase images were not generated in time");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        std::fs::write(&static_path, &html)?;
        let static_url = format!("http://{addr}/assets/{STATIC_NAME}");
        let body = client.get(&static_url).send().await?.error_for_status()?.text().await?;
        anyhow::ensure!(body == html, "the static copy differs from the page");

        println!(
            "comparison page {PAGE}: {} bytes; {connections} connections, {} s each in {rounds} alternating rounds, \
             127.0.0.1, profile {}",
            html.len(),
            seconds.as_secs(),
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
        // Warm up both.
        hammer(&page_url, connections, Duration::from_secs(1)).await;
        hammer(&static_url, connections, Duration::from_secs(1)).await;
        let empty = || Stats { requests: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
        let (mut dynamic, mut fixed) = (empty(), empty());
        for _ in 0..rounds {
            dynamic.merge(hammer(&page_url, connections, seconds / rounds).await);
            fixed.merge(hammer(&static_url, connections, seconds / rounds).await);
        }
        report("rendered (askama)", &dynamic);
        report("static file (ServeDir)", &fixed);
        println!(
            "rendered / static: {:.2}x the throughput, p50 {:.2}x, p99 {:.2}x",
            dynamic.rps() / fixed.rps(),
            dynamic.percentile(0.5).as_secs_f64() / fixed.percentile(0.5).as_secs_f64().max(1e-9),
            dynamic.percentile(0.99).as_secs_f64() / fixed.percentile(0.99).as_secs_f64().max(1e-9)
        );
        shutdown.cancel();
        let _ = serving.await;
        anyhow::Ok(())
    }
    .await;

    let _ = std::fs::remove_file(&static_path);
    pool.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut admin)
        .await;
    let _ = std::fs::remove_dir_all(&scratch);
    if let Some(cluster) = &db_server.cluster {
        cluster.stop();
    }
    result
}
