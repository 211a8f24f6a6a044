//! The credit ledger under concurrency and retries: idempotency, holds resolved exactly once,
//! database-enforced invariants, and a seeded randomized simulation with a model check.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use faceoff::ledger::{self, HoldId, HoldStatus, Kind, LedgerError, NewTransfer, Refs, System};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::{assert_ledger_invariants, migrated_db, user_with_credits};

fn later() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::minutes(10)
}

#[tokio::test]
async fn two_hundred_concurrent_reserves_against_one_wallet() {
    let (_db, pool) = migrated_db(32).await;
    let user = user_with_credits(&pool, 100).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.expect("conn");
                ledger::reserve(&mut conn, user, 22, &format!("job:{i}:hold"), later(), "run", Refs::default()).await
            })
        })
        .collect();
    let (mut ok, mut insufficient) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(hold) => {
                assert_eq!(hold.amount, 22);
                ok += 1;
            }
            Err(err @ LedgerError::InsufficientCredits { need: 22, have }) => {
                assert!(have < 22, "{err}");
                assert_eq!(err.to_string(), format!("insufficient credits (need 22, have {have})"));
                insufficient += 1;
            }
            Err(err) => panic!("unexpected error: {err}"),
        }
    }
    assert_eq!((ok, insufficient), (4, 196));
    let balance = ledger::balance(&pool, user).await.expect("balance");
    assert_eq!(balance, ledger::Balance { available: 12, held: 88 });
    assert_ledger_invariants(&pool).await;
}

#[tokio::test]
async fn transfers_are_idempotent_and_keys_cannot_be_reused_for_something_else() {
    let (_db, pool) = migrated_db(5).await;
    let user = user_with_credits(&pool, 0).await;
    let mut conn = pool.acquire().await.expect("conn");
    let wallet = ledger::wallet(&mut *conn, user).await.expect("wallet");
    let sales = ledger::system_account(&mut *conn, System::TopupSales).await.expect("system");
    let new = |amount| NewTransfer {
        key: "checkout:abc",
        debit: sales,
        credit: wallet,
        amount,
        kind: Kind::Topup,
        memo: "Top-up",
        refs: Refs::default(),
    };
    let first = ledger::transfer(&mut conn, new(500)).await.expect("transfer");
    assert!(!first.replayed);
    let again = ledger::transfer(&mut conn, new(500)).await.expect("replay");
    assert!(again.replayed);
    assert_eq!(again.transfer_id, first.transfer_id);
    assert!(matches!(ledger::transfer(&mut conn, new(501)).await, Err(LedgerError::KeyConflict(_))));
    let mut other = new(500);
    other.kind = Kind::Adjustment;
    assert!(matches!(ledger::transfer(&mut conn, other).await, Err(LedgerError::KeyConflict(_))));
    assert!(matches!(ledger::transfer(&mut conn, new(0)).await, Err(LedgerError::InvalidAmount(0))));
    assert!(matches!(ledger::transfer(&mut conn, new(-5)).await, Err(LedgerError::InvalidAmount(-5))));
    assert_eq!(ledger::balance(&mut *conn, user).await.expect("balance").available, 500);
    // The sign-up grant's key makes it exactly-once too.
    let grants = ledger::system_account(&mut *conn, System::SignupGrants).await.expect("system");
    let key = format!("signup:{user}");
    let signup = NewTransfer {
        key: &key,
        debit: grants,
        credit: wallet,
        amount: 100,
        kind: Kind::SignupBonus,
        memo: "Sign-up bonus",
        refs: Refs::default(),
    };
    assert!(!ledger::transfer(&mut conn, signup.clone()).await.expect("grant").replayed);
    assert!(ledger::transfer(&mut conn, signup).await.expect("grant again").replayed);
    assert_eq!(ledger::balance(&mut *conn, user).await.expect("balance").available, 600);
    drop(conn);
    assert_ledger_invariants(&pool).await;
}

#[tokio::test]
async fn a_failed_transfer_inside_a_transaction_leaves_it_usable() {
    let (_db, pool) = migrated_db(5).await;
    let user = user_with_credits(&pool, 10).await;
    let mut tx = faceoff::db::begin(&pool).await.expect("begin");
    let err = ledger::reserve(&mut tx, user, 11, "too-much", later(), "run", Refs::default()).await.expect_err("short");
    assert_eq!(err.to_string(), "insufficient credits (need 11, have 10)");
    let hold = ledger::reserve(&mut tx, user, 10, "just-right", later(), "run", Refs::default()).await.expect("fits");
    tx.commit().await.expect("commit");
    assert_eq!(ledger::balance(&pool, user).await.expect("balance"), ledger::Balance { available: 0, held: 10 });
    assert_eq!(ledger::get_hold(&pool, hold.hold_id).await.expect("hold").status, HoldStatus::Pending);
    assert_ledger_invariants(&pool).await;
}

#[tokio::test]
async fn holds_post_partially_void_fully_and_resolve_exactly_once() {
    let (_db, pool) = migrated_db(10).await;
    let user = user_with_credits(&pool, 100).await;
    let mut conn = pool.acquire().await.expect("conn");

    // Replaying a reserve returns the original hold; the same key with another amount is an error.
    let hold =
        ledger::reserve(&mut conn, user, 30, "job:1:hold", later(), "run", Refs::default()).await.expect("reserve");
    let replay =
        ledger::reserve(&mut conn, user, 30, "job:1:hold", later(), "run", Refs::default()).await.expect("replay");
    assert_eq!(replay.hold_id, hold.hold_id);
    assert!(matches!(
        ledger::reserve(&mut conn, user, 31, "job:1:hold", later(), "run", Refs::default()).await,
        Err(LedgerError::KeyConflict(_))
    ));
    assert_eq!(ledger::balance(&mut *conn, user).await.expect("b"), ledger::Balance { available: 70, held: 30 });

    // Partial post: 22 charged, 8 back.
    assert!(matches!(
        ledger::post(&mut conn, hold.hold_id, 31, "done", Refs::default()).await,
        Err(LedgerError::ExceedsHold { amount: 31, held: 30 })
    ));
    assert!(matches!(
        ledger::post(&mut conn, hold.hold_id, -1, "done", Refs::default()).await,
        Err(LedgerError::InvalidAmount(-1))
    ));
    let posted = ledger::post(&mut conn, hold.hold_id, 22, "done", Refs::default()).await.expect("post");
    assert_eq!((posted.status, posted.posted_amount), (HoldStatus::Posted, Some(22)));
    assert_eq!(ledger::balance(&mut *conn, user).await.expect("b"), ledger::Balance { available: 78, held: 0 });
    // A retry of the same post is a no-op; any other resolution is refused.
    ledger::post(&mut conn, hold.hold_id, 22, "done", Refs::default()).await.expect("same post again");
    assert!(matches!(
        ledger::post(&mut conn, hold.hold_id, 10, "done", Refs::default()).await,
        Err(LedgerError::AlreadyResolved { .. })
    ));
    assert!(matches!(
        ledger::void(&mut conn, hold.hold_id, "failed", Refs::default()).await,
        Err(LedgerError::AlreadyResolved { .. })
    ));
    assert_eq!(ledger::balance(&mut *conn, user).await.expect("b").available, 78);

    // Void: everything back, once.
    let hold =
        ledger::reserve(&mut conn, user, 50, "job:2:hold", later(), "run", Refs::default()).await.expect("reserve");
    ledger::void(&mut conn, hold.hold_id, "moderated", Refs::default()).await.expect("void");
    ledger::void(&mut conn, hold.hold_id, "moderated", Refs::default()).await.expect("void again is a no-op");
    assert!(matches!(
        ledger::post(&mut conn, hold.hold_id, 50, "late", Refs::default()).await,
        Err(LedgerError::AlreadyResolved { .. })
    ));
    assert_eq!(ledger::balance(&mut *conn, user).await.expect("b"), ledger::Balance { available: 78, held: 0 });
    assert!(matches!(ledger::void(&mut conn, 999_999, "x", Refs::default()).await, Err(LedgerError::HoldNotFound(_))));

    // Posting zero charges nothing and returns all.
    let hold =
        ledger::reserve(&mut conn, user, 5, "job:3:hold", later(), "run", Refs::default()).await.expect("reserve");
    ledger::post(&mut conn, hold.hold_id, 0, "free", Refs::default()).await.expect("post 0");
    assert_eq!(ledger::balance(&mut *conn, user).await.expect("b").available, 78);
    assert_eq!(ledger::system_balance(&mut *conn, System::GenerationRevenue).await.expect("rev"), 22);
    drop(conn);
    assert_ledger_invariants(&pool).await;
}

#[tokio::test]
async fn concurrent_resolutions_of_one_hold_have_exactly_one_winner() {
    let (_db, pool) = migrated_db(20).await;
    let user = user_with_credits(&pool, 1000).await;
    for round in 0..20 {
        let mut conn = pool.acquire().await.expect("conn");
        let hold = ledger::reserve(&mut conn, user, 40, &format!("race:{round}"), later(), "run", Refs::default())
            .await
            .expect("reserve");
        drop(conn);
        // Eight racers: posts of different amounts and voids.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut conn = pool.acquire().await.expect("conn");
                    if i % 2 == 0 {
                        ledger::post(&mut conn, hold.hold_id, 10 + i, "done", Refs::default())
                            .await
                            .map(|_| Some(10 + i))
                    } else {
                        ledger::void(&mut conn, hold.hold_id, "failed", Refs::default()).await.map(|_| None)
                    }
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            match racer.await.expect("task") {
                Ok(outcome) => winners.push(outcome),
                Err(LedgerError::AlreadyResolved { .. }) => {}
                Err(err) => panic!("unexpected: {err}"),
            }
        }
        // Several voids may all succeed (a void replays as a no-op), but only one kind of outcome.
        winners.dedup();
        assert_eq!(winners.len(), 1, "round {round}: outcomes {winners:?}");
        let final_hold = ledger::get_hold(&pool, hold.hold_id).await.expect("hold");
        match winners[0] {
            Some(amount) => {
                assert_eq!((final_hold.status, final_hold.posted_amount), (HoldStatus::Posted, Some(amount)))
            }
            None => assert_eq!(final_hold.status, HoldStatus::Voided),
        }
    }
    assert_ledger_invariants(&pool).await;
}

#[tokio::test]
async fn the_sweeper_voids_holds_past_their_deadline() {
    let (_db, pool) = migrated_db(5).await;
    let user = user_with_credits(&pool, 100).await;
    let mut conn = pool.acquire().await.expect("conn");
    let past = OffsetDateTime::now_utc() - Duration::seconds(1);
    let expired = ledger::reserve(&mut conn, user, 30, "old", past, "run", Refs::default()).await.expect("reserve");
    let posted =
        ledger::reserve(&mut conn, user, 20, "old-posted", past, "run", Refs::default()).await.expect("reserve");
    ledger::post(&mut conn, posted.hold_id, 20, "delivered", Refs::default()).await.expect("post");
    let live = ledger::reserve(&mut conn, user, 10, "live", later(), "run", Refs::default()).await.expect("reserve");
    drop(conn);
    assert_eq!(ledger::sweep_expired(&pool).await.expect("sweep"), 1);
    assert_eq!(ledger::sweep_expired(&pool).await.expect("sweep again"), 0);
    assert_eq!(ledger::get_hold(&pool, expired.hold_id).await.expect("h").status, HoldStatus::Voided);
    assert_eq!(ledger::get_hold(&pool, posted.hold_id).await.expect("h").status, HoldStatus::Posted);
    assert_eq!(ledger::get_hold(&pool, live.hold_id).await.expect("h").status, HoldStatus::Pending);
    assert_eq!(ledger::balance(&pool, user).await.expect("b"), ledger::Balance { available: 70, held: 10 });
    let history = ledger::history(&pool, user, 20, 0).await.expect("history");
    assert!(history.iter().any(|l| l.label() == "Refund" && l.memo.contains("expired")), "{history:?}");
    assert_ledger_invariants(&pool).await;
}

#[tokio::test]
async fn the_database_refuses_what_the_ledger_forbids() {
    let (_db, pool) = migrated_db(5).await;
    let user = user_with_credits(&pool, 100).await;
    let wallet: i64 = sqlx::query_scalar("SELECT account_id FROM ledger_account WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .expect("wallet");
    // Append-only.
    assert!(sqlx::query("UPDATE ledger_transfer SET amount = 1").execute(&pool).await.is_err());
    assert!(sqlx::query("DELETE FROM ledger_entry").execute(&pool).await.is_err());
    // A wallet never goes negative.
    assert!(
        sqlx::query("UPDATE ledger_account SET balance = -1 WHERE account_id = $1")
            .bind(wallet)
            .execute(&pool)
            .await
            .is_err()
    );
    // A transfer without its two balanced entries does not commit.
    let mut tx = faceoff::db::begin(&pool).await.expect("begin");
    sqlx::query(
        "INSERT INTO ledger_transfer (idempotency_key, debit_account_id, credit_account_id, amount, kind)
         SELECT 'rogue', account_id, $1, 5, 'adjustment' FROM ledger_account WHERE code = 'adjustments'",
    )
    .bind(wallet)
    .execute(&mut *tx)
    .await
    .expect("insert is deferred-checked");
    let err = tx.commit().await.expect_err("unbalanced transfer");
    assert!(err.to_string().contains("balanced"), "{err}");
    // An entry that does not follow the wallet's cached balance is refused.
    let mut tx = faceoff::db::begin(&pool).await.expect("begin");
    let transfer_id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_transfer (idempotency_key, debit_account_id, credit_account_id, amount, kind)
         SELECT 'rogue2', account_id, $1, 5, 'adjustment' FROM ledger_account WHERE code = 'adjustments'
         RETURNING transfer_id",
    )
    .bind(wallet)
    .fetch_one(&mut *tx)
    .await
    .expect("transfer");
    let err = sqlx::query(
        "INSERT INTO ledger_entry (transfer_id, account_id, amount, balance_after) VALUES ($1, $2, 5, 105)",
    )
    .bind(transfer_id)
    .bind(wallet)
    .execute(&mut *tx)
    .await
    .expect_err("balance not updated");
    assert!(err.to_string().contains("balance chain"), "{err}");
    drop(tx);
    // A resolved hold never changes again.
    let mut conn = pool.acquire().await.expect("conn");
    let hold = ledger::reserve(&mut conn, user, 10, "h", later(), "run", Refs::default()).await.expect("reserve");
    ledger::void(&mut conn, hold.hold_id, "x", Refs::default()).await.expect("void");
    assert!(
        sqlx::query("UPDATE ledger_hold SET status = 'pending', resolved_at = NULL WHERE hold_id = $1")
            .bind(hold.hold_id)
            .execute(&mut *conn)
            .await
            .is_err()
    );
    drop(conn);
    assert_eq!(ledger::balance(&pool, user).await.expect("b").available, 100);
    assert_ledger_invariants(&pool).await;
}

// ---- the simulator ----

/// What one task saw succeed (or fail as expected) during a round.
#[derive(Debug, Clone)]
enum Event {
    Granted { key: String, user: usize, amount: i64 },
    Reserved { hold_id: HoldId, user: usize, amount: i64, expired: bool },
    Posted { hold_id: HoldId, amount: i64 },
    Voided { hold_id: HoldId },
    Swept(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    Posted(i64),
    Voided,
}

#[derive(Debug, Default)]
struct Model {
    /// Credits granted per user (initial sign-up bonus included).
    granted: Vec<i64>,
    /// Every hold ever reserved: (user, amount, expired?, final resolution).
    holds: BTreeMap<HoldId, (usize, i64, bool, Option<Resolution>)>,
    grant_keys: HashMap<String, i64>,
    swept: u64,
}

struct Sim {
    pool: PgPool,
    users: Vec<Uuid>,
    round: usize,
}

async fn sim_task(sim: Arc<Sim>, task: usize, seed: u64, shared: Vec<HoldId>) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    let mut own: Vec<(HoldId, i64)> = Vec::new();
    let mut used_grant_keys: HashMap<String, i64> = HashMap::new();
    let round = sim.round;
    let adjustments = {
        let mut conn = sim.pool.acquire().await.expect("conn");
        ledger::system_account(&mut *conn, System::Adjustments).await.expect("system")
    };
    for op in 0..14 {
        let mut conn = sim.pool.acquire().await.expect("conn");
        let user = rng.random_range(0..sim.users.len());
        let user_id = sim.users[user];
        match rng.random_range(0..100) {
            // Grant, from a small key space so keys repeat; a repeat with another amount must fail.
            0..=14 => {
                let k: i64 = rng.random_range(0..3);
                let key = format!("grant:{round}:{task}:{k}");
                let amount = 5 + 3 * k;
                let wrong = used_grant_keys.contains_key(&key) && rng.random_bool(0.3);
                let wallet = ledger::wallet(&mut *conn, user_id).await.expect("wallet");
                // A key is bound to the first user it was used with.
                let wallet = match used_grant_keys.get(&key) {
                    Some(&w) => w,
                    None => wallet,
                };
                let result = ledger::transfer(
                    &mut conn,
                    NewTransfer {
                        key: &key,
                        debit: adjustments,
                        credit: wallet,
                        amount: if wrong { amount + 1 } else { amount },
                        kind: Kind::Adjustment,
                        memo: "sim grant",
                        refs: Refs::default(),
                    },
                )
                .await;
                match result {
                    Ok(t) => {
                        assert!(!wrong, "a reused key with another amount was accepted");
                        assert_eq!(t.replayed, used_grant_keys.contains_key(&key), "replay flag for {key}");
                        used_grant_keys.insert(key.clone(), wallet);
                        let owner = sim_user_of_wallet(&sim, &mut conn, wallet).await;
                        events.push(Event::Granted { key, user: owner, amount });
                    }
                    Err(LedgerError::KeyConflict(_)) => assert!(wrong, "unexpected key conflict for {key}"),
                    Err(err) => panic!("grant: {err}"),
                }
            }
            // Reserve (sometimes retried with the same key, sometimes already expired).
            15..=49 => {
                let amount = rng.random_range(1..=40);
                let expired = rng.random_bool(0.2);
                let deadline = if expired {
                    OffsetDateTime::now_utc() - Duration::seconds(5)
                } else {
                    OffsetDateTime::now_utc() + Duration::minutes(5)
                };
                let key = format!("hold:{round}:{task}:{op}");
                let attempts = if rng.random_bool(0.25) { 2 } else { 1 };
                let mut got: Option<HoldId> = None;
                for _ in 0..attempts {
                    match ledger::reserve(&mut conn, user_id, amount, &key, deadline, "sim", Refs::default()).await {
                        Ok(hold) => {
                            assert_eq!(hold.amount, amount);
                            if let Some(previous) = got {
                                assert_eq!(previous, hold.hold_id, "a replayed reserve made a second hold");
                            }
                            got = Some(hold.hold_id);
                        }
                        Err(LedgerError::InsufficientCredits { need, have }) => {
                            assert_eq!(need, amount);
                            assert!(have < need, "refused {need} while {have} were available");
                        }
                        Err(err) => panic!("reserve: {err}"),
                    }
                }
                if let Some(hold_id) = got {
                    events.push(Event::Reserved { hold_id, user, amount, expired });
                    own.push((hold_id, amount));
                }
            }
            // Resolve one of our own holds: full or partial post, or void; maybe retried, maybe
            // followed by a conflicting resolution that must be refused.
            50..=74 if !own.is_empty() => {
                let (hold_id, amount) = own.swap_remove(rng.random_range(0..own.len()));
                let post_amount = match rng.random_range(0..4) {
                    0 => Some(amount),
                    1 => Some(rng.random_range(0..=amount)),
                    2 => Some(amount + 1),
                    _ => None,
                };
                let retries = if rng.random_bool(0.3) { 2 } else { 1 };
                for _ in 0..retries {
                    resolve_and_record(&mut conn, hold_id, post_amount, &mut events).await;
                }
                if rng.random_bool(0.2) {
                    let other = if post_amount.is_some() { None } else { Some(0) };
                    resolve_and_record(&mut conn, hold_id, other, &mut events).await;
                }
            }
            // Race everyone else on the round's shared holds.
            75..=89 if !shared.is_empty() => {
                let hold_id = shared[rng.random_range(0..shared.len())];
                let post_amount = if rng.random_bool(0.5) { Some(rng.random_range(0..=10)) } else { None };
                resolve_and_record(&mut conn, hold_id, post_amount, &mut events).await;
            }
            // Sweep expired holds while others work.
            _ => {
                drop(conn);
                let swept = ledger::sweep_expired(&sim.pool).await.expect("sweep");
                events.push(Event::Swept(swept));
            }
        }
    }
    events
}

async fn sim_user_of_wallet(sim: &Sim, conn: &mut sqlx::PgConnection, wallet: i64) -> usize {
    let user: Uuid = sqlx::query_scalar("SELECT user_id FROM ledger_account WHERE account_id = $1")
        .bind(wallet)
        .fetch_one(&mut *conn)
        .await
        .expect("owner");
    sim.users.iter().position(|u| *u == user).expect("a sim user")
}

async fn resolve_and_record(
    conn: &mut sqlx::PgConnection,
    hold_id: HoldId,
    post: Option<i64>,
    events: &mut Vec<Event>,
) {
    let result = match post {
        Some(amount) => ledger::post(conn, hold_id, amount, "sim post", Refs::default()).await,
        None => ledger::void(conn, hold_id, "sim void", Refs::default()).await,
    };
    match (result, post) {
        (Ok(hold), Some(amount)) => {
            assert_eq!((hold.status, hold.posted_amount), (HoldStatus::Posted, Some(amount)));
            events.push(Event::Posted { hold_id, amount });
        }
        (Ok(hold), None) => {
            assert_eq!(hold.status, HoldStatus::Voided);
            events.push(Event::Voided { hold_id });
        }
        (Err(LedgerError::AlreadyResolved { .. }), _) => {}
        (Err(LedgerError::ExceedsHold { amount, held }), _) => assert!(amount > held),
        (Err(err), _) => panic!("resolve {hold_id}: {err}"),
    }
}

#[tokio::test]
async fn simulated_concurrent_ledger_traffic_matches_the_model() {
    let seed: u64 = match std::env::var("FACEOFF_SIM_SEED") {
        Ok(raw) => raw.trim().parse().expect("FACEOFF_SIM_SEED must be a number"),
        Err(_) => rand::random(),
    };
    println!("ledger simulation: FACEOFF_SIM_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (_db, pool) = migrated_db(24).await;
    const USERS: usize = 4;
    const TASKS: usize = 8;
    const ROUNDS: usize = 12;
    let mut users = Vec::new();
    let mut model = Model::default();
    for _ in 0..USERS {
        users.push(user_with_credits(&pool, 60).await);
        model.granted.push(60);
    }

    for round in 0..ROUNDS {
        // Holds every task will race to resolve, some of them already past their deadline.
        let mut shared = Vec::new();
        for i in 0..3 {
            let user = rng.random_range(0..USERS);
            let expired = rng.random_bool(0.4);
            let deadline = if expired {
                OffsetDateTime::now_utc() - Duration::seconds(1)
            } else {
                OffsetDateTime::now_utc() + Duration::minutes(5)
            };
            let mut conn = pool.acquire().await.expect("conn");
            if let Ok(hold) = ledger::reserve(
                &mut conn,
                users[user],
                10,
                &format!("shared:{round}:{i}"),
                deadline,
                "sim",
                Refs::default(),
            )
            .await
            {
                model.holds.insert(hold.hold_id, (user, 10, expired, None));
                shared.push(hold.hold_id);
            }
        }
        let sim = Arc::new(Sim { pool: pool.clone(), users: users.clone(), round });
        let tasks: Vec<_> =
            (0..TASKS).map(|task| tokio::spawn(sim_task(sim.clone(), task, rng.random(), shared.clone()))).collect();
        let mut events = Vec::new();
        for task in tasks {
            events.extend(task.await.expect("sim task"));
        }
        // Holds past their deadline that nobody resolved are voided by a final sweep.
        events.push(Event::Swept(ledger::sweep_expired(&pool).await.expect("sweep")));

        // Fold what succeeded into the model.
        for event in &events {
            match event {
                Event::Granted { key, user, amount } => {
                    if let Some(previous) = model.grant_keys.insert(key.clone(), *amount) {
                        assert_eq!(previous, *amount);
                    } else {
                        model.granted[*user] += amount;
                    }
                }
                Event::Reserved { hold_id, user, amount, expired } => {
                    model.holds.insert(*hold_id, (*user, *amount, *expired, None));
                }
                Event::Swept(n) => model.swept += n,
                Event::Posted { .. } | Event::Voided { .. } => {}
            }
        }
        for event in &events {
            let (hold_id, resolution) = match event {
                Event::Posted { hold_id, amount } => (hold_id, Resolution::Posted(*amount)),
                Event::Voided { hold_id } => (hold_id, Resolution::Voided),
                _ => continue,
            };
            let hold = model.holds.get_mut(hold_id).expect("a known hold");
            match hold.3 {
                None => hold.3 = Some(resolution),
                Some(previous) => assert_eq!(previous, resolution, "hold {hold_id} resolved two ways"),
            }
        }
        // A pending hold past its deadline is voided by the sweep (nobody else resolved it).
        for hold in model.holds.values_mut() {
            if hold.2 && hold.3.is_none() {
                hold.3 = Some(Resolution::Voided);
            }
        }

        // The model's view of every hold and balance, against the database's.
        let mut expected_available = model.granted.clone();
        let mut expected_held = [0i64; USERS];
        let (mut revenue, mut pending_total) = (0i64, 0i64);
        for (hold_id, (user, amount, _, resolution)) in &model.holds {
            let db_hold = ledger::get_hold(&pool, *hold_id).await.expect("hold");
            expected_available[*user] -= amount;
            match resolution {
                None => {
                    assert_eq!(db_hold.status, HoldStatus::Pending, "hold {hold_id} (seed {seed})");
                    expected_held[*user] += amount;
                    pending_total += amount;
                }
                Some(Resolution::Voided) => {
                    assert_eq!(db_hold.status, HoldStatus::Voided, "hold {hold_id} (seed {seed})");
                    expected_available[*user] += amount;
                }
                Some(Resolution::Posted(p)) => {
                    assert_eq!(
                        (db_hold.status, db_hold.posted_amount),
                        (HoldStatus::Posted, Some(*p)),
                        "hold {hold_id} (seed {seed})"
                    );
                    expected_available[*user] += amount - p;
                    revenue += p;
                }
            }
        }
        for (i, user) in users.iter().enumerate() {
            let balance = ledger::balance(&pool, *user).await.expect("balance");
            assert_eq!(
                balance,
                ledger::Balance { available: expected_available[i], held: expected_held[i] },
                "user {i} after round {round} (seed {seed})"
            );
        }
        let mut conn = pool.acquire().await.expect("conn");
        assert_eq!(ledger::system_balance(&mut *conn, System::GenerationRevenue).await.expect("rev"), revenue);
        assert_eq!(ledger::system_balance(&mut *conn, System::PendingHolds).await.expect("pending"), pending_total);
        let issued: i64 = model.grant_keys.values().sum();
        assert_eq!(ledger::system_balance(&mut *conn, System::Adjustments).await.expect("adj"), -issued);
        drop(conn);
        assert_ledger_invariants(&pool).await;
    }
    let expired_voided = model.holds.values().filter(|h| h.2 && h.3 == Some(Resolution::Voided)).count() as u64;
    assert!(model.swept <= expired_voided, "swept {} > {expired_voided} expired holds voided", model.swept);
    println!(
        "ledger simulation: {} holds, {} grant keys, {} swept (seed {seed})",
        model.holds.len(),
        model.grant_keys.len(),
        model.swept
    );
}
