//! Throughput of the job pipeline: `cargo bench --bench jobs`.
//!
//! Creates a scratch database, `BENCH_USERS` users (default 20) and `BENCH_RUNS` runs (default
//! 200, two models each) through `runs::create_run` — the function behind `POST /runs` — then
//! runs the worker pool (`BENCH_WORKERS`, default 8) against a zero-latency sandbox and reports
//! jobs per second from the first submission to the last settled job (claim, render, store the
//! image and its thumbnail, post the hold). The scratch database is dropped at the end.

use std::time::{Duration, Instant};

use faceoff::{
    AppState,
    config::Config,
    jobs::{self, WorkerOptions},
    ledger, runs,
    runs::create::RunInput,
    server,
};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users = env("BENCH_USERS", 20);
    let runs_n = env("BENCH_RUNS", 200);
    let workers = env("BENCH_WORKERS", 8);

    let mut config = Config::for_tests();
    config.storage_url = "memory://".into();
    config.workers = workers;
    let located = faceoff::db::locate(&config).await?;
    let name = format!("faceoff_bench_{}", std::process::id());
    let admin = located.options.clone().database("postgres");
    let mut conn = PgConnection::connect_with(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await?;
    let result = bench(&located.options.clone().database(&name), config, users, runs_n, workers).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut conn)
        .await?;
    result
}

async fn bench(
    options: &sqlx::postgres::PgConnectOptions,
    config: Config,
    users: usize,
    runs_n: usize,
    workers: usize,
) -> anyhow::Result<()> {
    let pool = faceoff::db::pool(options, (workers as u32 + 8).max(20));
    server::prepare_database(&pool, &config).await?;
    let state = AppState::new(pool.clone(), config).await?;
    let catalog = state.catalog.current();
    // The benchmark measures throughput, not the per-user limits.
    let mut queue = state.config.queue;
    queue.api.max_queued = u32::MAX;

    let mut user_ids = Vec::new();
    for i in 0..users {
        let mut tx = faceoff::db::begin(&pool).await?;
        let id = faceoff::accounts::create_user(
            &mut tx,
            &format!("bench{i}@example.com"),
            "x",
            faceoff::accounts::Role::User,
            1_000_000,
        )
        .await?;
        tx.commit().await?;
        user_ids.push(id);
    }

    // Workers first, so jobs are picked up as they are submitted.
    let shutdown = CancellationToken::new();
    let options = WorkerOptions {
        workers,
        lease: Duration::from_secs(60),
        idle_poll: Duration::from_millis(200),
        per_provider: workers.max(1),
        max_transient: 3,
        running_limits: faceoff::jobs::RunningLimits::NONE,
    };
    let tasks =
        jobs::spawn_workers(pool.clone(), state.store.clone(), state.providers.clone(), options, shutdown.clone());

    let start = Instant::now();
    let pairs = [["flux-2", "flux-ultra-1-1"], ["flux-2-max", "flux-1-1-pro"], ["flux-2:klein-9b", "flux-kontext-pro"]];
    let mut submitters = Vec::new();
    for (u, user_id) in user_ids.iter().copied().enumerate() {
        let (pool, store, catalog) = (pool.clone(), state.store.clone(), catalog.clone());
        let mine: Vec<usize> = (0..runs_n).filter(|r| r % users == u).collect();
        submitters.push(tokio::spawn(async move {
            for r in mine {
                let input = RunInput {
                    prompt: format!("benchmark run {r}"),
                    models: pairs[r % pairs.len()].iter().map(|s| s.to_string()).collect(),
                    mode: "2k".into(),
                    aspect_ratio: "1:1".into(),
                    seed: r.to_string(),
                    ..RunInput::default()
                };
                let valid = runs::validate(&catalog, &input, None).map_err(|e| anyhow::anyhow!(e.summary()))?;
                runs::create_run(&pool, &store, &queue, user_id, &valid, &format!("bench-{r}")).await?;
            }
            anyhow::Ok(())
        }));
    }
    for s in submitters {
        s.await??;
    }
    let submitted = start.elapsed();
    let total_jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM generation_job").fetch_one(&pool).await?;
    loop {
        let pending = jobs::pending_count(&pool).await?;
        if pending == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("{pending} jobs still pending after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generation_job WHERE status = 'delivered'").fetch_one(&pool).await?;
    let mut conn = pool.acquire().await?;
    let report = ledger::check_invariants(&mut conn).await?;
    println!(
        "jobs pipeline: {total_jobs} jobs ({runs_n} runs, {users} users, {workers} workers, zero-latency sandbox, 2k 1:1)"
    );
    println!(
        "  submitted all runs in {:.2} s ({:.0} runs/s)",
        submitted.as_secs_f64(),
        runs_n as f64 / submitted.as_secs_f64()
    );
    println!(
        "  submit → settled: {:.2} s, {:.1} jobs/s; delivered {delivered}/{total_jobs}; ledger invariants {}",
        elapsed.as_secs_f64(),
        total_jobs as f64 / elapsed.as_secs_f64(),
        if report.is_ok() { "ok".to_string() } else { format!("VIOLATED: {:?}", report.violations) }
    );
    drop(conn);
    pool.close().await;
    Ok(())
}
