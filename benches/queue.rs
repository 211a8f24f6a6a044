//! The claim at a deep queue: `cargo bench --bench queue`.
//!
//! Creates a scratch database with `BENCH_USERS` users (default 1,000) and `BENCH_JOBS` queued
//! jobs (default 100,000: runs of two jobs, spread evenly over the users, with the fair slots
//! `runs::create_run` would give them; inserted with SQL, and the jobs' foreign key to their
//! ledger holds dropped in this scratch database so that 100,000 holds need not be made). Then,
//! for today's fair claim (`jobs::claim_with`) and the FIFO claim it replaced (`ORDER BY
//! run_after, created_at` over queued and lease-expired jobs), it prints:
//!
//! - the plan (`EXPLAIN ANALYZE`, rolled back) of one claim;
//! - claim latency (p50, p99, mean) over `BENCH_CLAIMS` sequential claims (default 1,000);
//! - claims per second with `BENCH_CLAIMERS` concurrent claimers (default 8) making
//!   `BENCH_CLAIMS` claims together (the claimed jobs are only claimed, not run: this measures
//!   the queue, not the providers; the fair claim checks running limits of 1,000 per user);
//! - how many claims pass before the first job of a user who submits one run after the
//!   100,000 (FIFO: all of them).
//!
//! Between the two, the claimed jobs are put back (queued again) and the table vacuumed.

use std::time::{Duration, Instant};

use faceoff::{
    config::Config,
    jobs::{self, RunningLimits},
    server,
};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The claim as it was before the fair queue (commit fdb8c54), for comparison.
const FIFO_CLAIM_SQL: &str = "WITH next AS (
         SELECT job_id FROM generation_job
         WHERE ((status = 'queued' AND run_after <= now()) OR (status = 'running' AND lease_expires_at < now()))
           AND NOT (provider = ANY($3))
         ORDER BY run_after, created_at
         LIMIT 1
         FOR UPDATE SKIP LOCKED
     )
     UPDATE generation_job j
     SET status = 'running', attempts = j.attempts + 1, lease_token = $1,
         lease_expires_at = now() + make_interval(secs => $2), started_at = COALESCE(j.started_at, now())
     FROM next WHERE j.job_id = next.job_id
     RETURNING j.job_id";

/// Running limits high enough for the bench's claims (about 3 per user), but still checked.
const LIMITS: RunningLimits = RunningLimits { studio: 1_000, api: 1_000 };

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Claim {
    Fifo,
    Fair,
}

impl Claim {
    fn name(self) -> &'static str {
        match self {
            Claim::Fifo => "FIFO (before)",
            Claim::Fair => "fair (now)",
        }
    }
}

/// One claim; the claimed job's run.
async fn claim(pool: &PgPool, how: Claim) -> anyhow::Result<Option<Uuid>> {
    Ok(match how {
        Claim::Fair => jobs::claim_with(pool, Duration::from_secs(600), &[], LIMITS).await?.map(|j| j.run_id),
        Claim::Fifo => {
            let job: Option<Uuid> = sqlx::query_scalar(FIFO_CLAIM_SQL)
                .bind(Uuid::new_v4())
                .bind(600.0f64)
                .bind(Vec::<String>::new())
                .fetch_optional(pool)
                .await?;
            match job {
                Some(job) => Some(
                    sqlx::query_scalar("SELECT run_id FROM generation_job WHERE job_id = $1")
                        .bind(job)
                        .fetch_one(pool)
                        .await?,
                ),
                None => None,
            }
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users = env("BENCH_USERS", 1_000);
    let jobs_n = env("BENCH_JOBS", 100_000);
    let claims = env("BENCH_CLAIMS", 1_000);
    let claimers = env("BENCH_CLAIMERS", 8);

    let config = Config::for_tests();
    let located = faceoff::db::locate(&config).await?;
    let name = format!("faceoff_bench_queue_{}", std::process::id());
    let admin = located.options.clone().database("postgres");
    let mut conn = PgConnection::connect_with(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await?;
    let result = bench(&located.options.clone().database(&name), config, users, jobs_n, claims, claimers).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut conn)
        .await?;
    result
}

async fn bench(
    options: &sqlx::postgres::PgConnectOptions,
    config: Config,
    users: usize,
    jobs_n: usize,
    claims: usize,
    claimers: usize,
) -> anyhow::Result<()> {
    let pool = faceoff::db::pool(options, (claimers as u32 + 4).max(12));
    server::prepare_database(&pool, &config).await?;
    let t = Instant::now();
    fill(&pool, users, jobs_n).await?;
    println!(
        "queue: {jobs_n} queued jobs from {users} users (two per run), filled in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    for how in [Claim::Fifo, Claim::Fair] {
        reset(&pool).await?;
        println!("\n## {}\n", how.name());
        explain(&pool, how).await?;

        // Latency, one claim at a time.
        let mut times = Vec::with_capacity(claims);
        for _ in 0..claims {
            let t = Instant::now();
            claim(&pool, how).await?.ok_or_else(|| anyhow::anyhow!("the queue ran dry"))?;
            times.push(t.elapsed());
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "claim latency over {claims} sequential claims: p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms",
            ms(times[times.len() / 2]),
            ms(times[times.len() * 99 / 100]),
            ms(mean)
        );

        // Throughput, `claimers` at once.
        let t = Instant::now();
        let tasks: Vec<_> = (0..claimers)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut n = 0usize;
                    for _ in 0..claims / claimers {
                        if claim(&pool, how).await?.is_some() {
                            n += 1;
                        }
                    }
                    anyhow::Ok(n)
                })
            })
            .collect();
        let mut claimed = 0;
        for task in tasks {
            claimed += task.await??;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "throughput: {claimed} claims by {claimers} concurrent claimers in {secs:.2} s = {:.0} jobs/s",
            claimed as f64 / secs
        );

        // A newcomer's run after the whole queue.
        let newcomer = newcomer_run(&pool).await?;
        let mut passed = 0usize;
        let limit = 5_000usize;
        loop {
            match claim(&pool, how).await? {
                Some(run) if run == newcomer => break,
                Some(_) if passed < limit => passed += 1,
                Some(_) => {
                    passed = usize::MAX;
                    break;
                }
                None => anyhow::bail!("the queue ran dry"),
            }
        }
        if passed == usize::MAX {
            println!("a newcomer's run submitted now: not started after {limit} claims (FIFO: behind the whole queue)");
        } else {
            println!("a newcomer's run submitted now: its first job starts after {passed} other claims");
        }
    }
    println!("\n(PostgreSQL {}; the machine is shared with other builds while this runs)", pg_version(&pool).await?);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn pg_version(pool: &PgPool) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SHOW server_version").fetch_one(pool).await?)
}

/// `users` users and `jobs_n` queued jobs, two per run, each user's runs submitted in turn (the
/// FIFO order interleaves users by submission time; the fair slots are the ones `create_run`
/// gives: each user's flow starts at 0).
async fn fill(pool: &PgPool, users: usize, jobs_n: usize) -> anyhow::Result<()> {
    let mut tx = faceoff::db::begin(pool).await?;
    for i in 0..users {
        faceoff::accounts::create_user(
            &mut tx,
            &format!("queue{i}@example.com"),
            "x",
            faceoff::accounts::Role::User,
            0,
        )
        .await?;
    }
    tx.commit().await?;
    let runs_per_user = (jobs_n / 2).div_ceil(users) as i32;
    let mut conn = pool.acquire().await?;
    // Scratch database only: jobs without ledger holds.
    sqlx::query("ALTER TABLE generation_job DROP CONSTRAINT generation_job_hold_id_fkey").execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO generation_run (run_id, user_id, prompt, mode, aspect_ratio, seed, idempotency_key, total_price,
                                     source, created_at)
         SELECT gen_random_uuid(), u.user_id, 'queue benchmark', '2k', '1:1', 1, 'bench-' || g, 38, 'api',
                now() - make_interval(secs => ($1 - g) * 60 + u.n * 0.01)
         FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) AS n FROM app_user) u,
              generate_series(1, $1) g",
    )
    .bind(runs_per_user)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO generation_job (job_id, run_id, position, model_slug, model_name, variant_slug, variant_name,
                                     variant_is_default, provider, endpoint, width, height, price, hold_id, deadline,
                                     user_id, interactive, fair_slot, created_at, run_after)
         SELECT gen_random_uuid(), r.run_id, p, 'flux-2', 'Flux 2', 'standard', 'Standard', true, 'bfl', 'flux-2',
                1024, 1024, 19, row_number() OVER (), now() + interval '1 day', r.user_id, false,
                (substring(r.idempotency_key from 7)::bigint - 1) * 2 + p, r.created_at, r.created_at
         FROM generation_run r, generate_series(0, 1) p",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("VACUUM ANALYZE generation_job").execute(&mut *conn).await?;
    sqlx::query("VACUUM ANALYZE generation_run").execute(&mut *conn).await?;
    Ok(())
}

/// Puts every claimed job back in the queue, as it was.
async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE generation_job SET status = 'queued', lease_token = NULL, lease_expires_at = NULL, started_at = NULL,
                attempts = 0
         WHERE status = 'running'",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "DELETE FROM generation_job WHERE run_id IN (SELECT run_id FROM generation_run WHERE prompt = 'newcomer')",
    )
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM generation_run WHERE prompt = 'newcomer'").execute(pool).await?;
    let mut conn = pool.acquire().await?;
    sqlx::query("VACUUM ANALYZE generation_job").execute(&mut *conn).await?;
    Ok(())
}

/// A new user submits one run of two jobs now, with the slots `create_run` would give.
async fn newcomer_run(pool: &PgPool) -> anyhow::Result<Uuid> {
    let mut tx = faceoff::db::begin(pool).await?;
    let user = faceoff::accounts::create_user(
        &mut tx,
        &format!("newcomer-{}@example.com", Uuid::new_v4()),
        "x",
        faceoff::accounts::Role::User,
        0,
    )
    .await?;
    let slot = jobs::queue::next_slot(&mut *tx, user, jobs::Source::Api).await?;
    let run_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO generation_run (run_id, user_id, prompt, mode, aspect_ratio, seed, idempotency_key, total_price)
         VALUES ($1, $2, 'newcomer', '2k', '1:1', 1, 'newcomer', 38)",
    )
    .bind(run_id)
    .bind(user)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO generation_job (job_id, run_id, position, model_slug, model_name, variant_slug, variant_name,
                                     variant_is_default, provider, endpoint, width, height, price, hold_id, deadline,
                                     user_id, interactive, fair_slot)
         SELECT gen_random_uuid(), $1, p, 'flux-2', 'Flux 2', 'standard', 'Standard', true, 'bfl', 'flux-2',
                1024, 1024, 19, (SELECT max(hold_id) FROM generation_job) + 1 + p, now() + interval '1 day',
                $2, false, $3 + p
         FROM generate_series(0, 1) p",
    )
    .bind(run_id)
    .bind(user)
    .bind(slot)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(run_id)
}

/// Prints the plan of one claim (executed, then rolled back).
async fn explain(pool: &PgPool, how: Claim) -> anyhow::Result<()> {
    let mut tx = faceoff::db::begin(pool).await?;
    let plan: Vec<String> = match how {
        Claim::Fair => {
            let sql = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}", jobs::CLAIM_SQL);
            let limits = LIMITS;
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(Uuid::new_v4())
                .bind(600.0f64)
                .bind(Vec::<String>::new())
                .bind(i64::from(limits.studio))
                .bind(i64::from(limits.api))
                .bind(jobs::queue::CLAIM_WINDOW)
                .fetch_all(&mut *tx)
                .await?
        }
        Claim::Fifo => {
            let sql = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {FIFO_CLAIM_SQL}");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(Uuid::new_v4())
                .bind(600.0f64)
                .bind(Vec::<String>::new())
                .fetch_all(&mut *tx)
                .await?
        }
    };
    tx.rollback().await?;
    println!("plan of one claim:\n```");
    for line in &plan {
        println!("{line}");
    }
    println!("```");
    if how == Claim::Fair {
        let text = plan.join("\n");
        anyhow::ensure!(
            text.contains("generation_job_fair_idx") && !text.contains("Seq Scan on generation_job"),
            "the fair claim must walk generation_job_fair_idx, not scan the queue"
        );
    }
    Ok(())
}
