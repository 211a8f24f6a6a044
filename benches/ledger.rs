//! Ledger throughput: reserve + post pairs (a generation's whole life in the ledger) from 16
//! concurrent tasks against a scratch database on the local server, with p50/p99 latency; then,
//! when `pgbench` is available, PostgreSQL's own TPC-B-like test on the same server for scale.
//!
//! `cargo bench --bench ledger` (env: `BENCH_SECS`, default 10; `BENCH_USERS`, default 1000).

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use faceoff::{
    accounts::{self, Role},
    config::Config,
    db,
    ledger::{self, Refs},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use time::OffsetDateTime;

const TASKS: usize = 16;
const PRICE: i64 = 22;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let users: usize = std::env::var("BENCH_USERS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let config = Config::from_env()?;
    let server = db::locate(&config).await?;
    let name = format!("faceoff_bench_{}", std::process::id());
    let options = server.database(&name);
    db::create_database_if_missing(&options).await?;
    let pool = db::pool(&options, (TASKS + 4) as u32);
    let ours = async {
        db::migrate(&pool).await?;
        bench_ledger(&pool, users, Duration::from_secs(secs)).await
    }
    .await;
    pool.close().await;
    drop_database(&options, &name).await;
    let ours = ours?;

    match find_pgbench() {
        Some(pgbench) => {
            let scratch = format!("faceoff_pgbench_{}", std::process::id());
            let options = server.database(&scratch);
            db::create_database_if_missing(&options).await?;
            let result = run_pgbench(&pgbench, &options, &scratch, secs);
            drop_database(&options, &scratch).await;
            match result {
                Ok(tps) => {
                    println!("pgbench TPC-B-like (-s 10 -c 16 -j 2 -T {secs}): {tps:.0} tps");
                    println!("ratio: {:.2} ledger pairs per pgbench transaction ({:.0} / {tps:.0})", ours / tps, ours);
                }
                Err(err) => println!("pgbench failed: {err:#}"),
            }
        }
        None => println!("pgbench not found on PATH: skipping the comparison"),
    }
    if let Some(cluster) = &server.cluster {
        cluster.stop();
    }
    Ok(())
}

/// Runs reserve+post pairs for `duration`; returns pairs per second.
async fn bench_ledger(pool: &PgPool, users: usize, duration: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(users);
    for i in 0..users {
        let mut tx = faceoff::db::begin(pool).await?;
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q";
        ids.push(accounts::create_user(&mut tx, &format!("bench{i}@example.com"), hash, Role::User, 10_000_000).await?);
        tx.commit().await?;
    }
    println!("ledger: {users} users with credits created in {:.1?}", started.elapsed());

    let ids = std::sync::Arc::new(ids);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let pool = pool.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(task as u64);
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let user = ids[rng.random_range(0..ids.len())];
                    let key = format!("bench:{task}:{n}");
                    n += 1;
                    let t0 = Instant::now();
                    let mut conn = pool.acquire().await?;
                    let until = OffsetDateTime::now_utc() + time::Duration::minutes(10);
                    let hold =
                        ledger::reserve(&mut conn, user, PRICE, &key, until, "bench run", Refs::default()).await?;
                    ledger::post(&mut conn, hold.hold_id, PRICE, "bench image", Refs::default()).await?;
                    drop(conn);
                    latencies.push(t0.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("bench task")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    let pairs_per_sec = latencies.len() as f64 / elapsed;
    println!(
        "ledger: {} reserve+post pairs from {TASKS} tasks in {elapsed:.1} s = {pairs_per_sec:.0} pairs/s; latency p50 {:.2?}, p99 {:.2?}",
        latencies.len(),
        pct(0.50).copied().unwrap_or_default(),
        pct(0.99).copied().unwrap_or_default(),
    );
    let mut conn = pool.acquire().await?;
    let report = ledger::check_invariants(&mut conn).await?;
    anyhow::ensure!(report.is_ok(), "ledger invariants violated after the run: {:?}", report.violations);
    println!("ledger: invariants hold after the run");
    Ok(pairs_per_sec)
}

fn find_pgbench() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("pgbench")).find(|p| p.is_file()));
    on_path.or_else(|| db::find_pg_bin().map(|dir| dir.join("pgbench")).filter(|p| p.is_file()))
}

fn run_pgbench(pgbench: &PathBuf, options: &PgConnectOptions, database: &str, secs: u64) -> anyhow::Result<f64> {
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => options.get_host().to_string(),
    };
    let port = options.get_port().to_string();
    let user = options.get_username().to_string();
    let common = ["-h", host.as_str(), "-p", port.as_str(), "-U", user.as_str()];
    println!("pgbench: initialising scale 10 ({})", pgbench.display());
    let init = Command::new(pgbench).args(common).args(["-i", "-q", "-s", "10", database]).output()?;
    anyhow::ensure!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let secs = secs.to_string();
    let run =
        Command::new(pgbench).args(common).args(["-c", "16", "-j", "2", "-T", secs.as_str(), database]).output()?;
    let out = String::from_utf8_lossy(&run.stdout);
    anyhow::ensure!(run.status.success(), "pgbench: {}{}", out, String::from_utf8_lossy(&run.stderr));
    out.lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps in pgbench output:\n{out}"))
}

async fn drop_database(options: &PgConnectOptions, name: &str) {
    let Ok(mut conn) = PgConnection::connect_with(&options.clone().database("postgres")).await else {
        eprintln!("could not connect to drop {name}");
        return;
    };
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
        eprintln!("could not drop {name}: {err}");
    }
    let _ = conn.close().await;
}
