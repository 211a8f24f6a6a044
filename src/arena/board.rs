//! Boards: the background recompute of every board from the counted votes into snapshot rows,
//! and reading the newest snapshot of a board (pages and the API never fit anything).
//!
//! Boards: `all` and one per use case (votes on runs whose images all came from real
//! providers), and `demo` (votes on runs with any sandbox image: demos and tests, never mixed
//! into the public boards). A vote counts when it was cast blind, its voter's account is older
//! than `min_account_age` and has a delivered, charged image, and it is among the voter's first
//! `daily_cap` votes of that day on that board; the others are held back (counted separately).

use std::collections::{BTreeMap, HashMap};

use sqlx::{FromRow, PgExecutor, PgPool};
use time::OffsetDateTime;

use super::rating::{self, Outcome, Settings};
use crate::{
    catalog::{Catalog, Mode},
    config::ArenaSettings,
};

pub const ALL: &str = "all";
pub const DEMO: &str = "demo";

/// A vote as the recompute reads it, with why it is held back (None: it counts).
#[derive(Debug, Clone, FromRow)]
pub struct LoadedVote {
    pub vote_id: i64,
    pub use_case: String,
    pub choice: String,
    pub winner: Option<i16>,
    pub entries: Vec<String>,
    pub sandbox: bool,
    pub excluded: Option<String>,
}

/// Loads every vote with its exclusion reason under the trust rules.
pub async fn load_votes(db: impl PgExecutor<'_>, settings: &ArenaSettings) -> Result<Vec<LoadedVote>, sqlx::Error> {
    sqlx::query_as(
        "WITH v AS (
            SELECT v.*, u.created_at AS account_created,
                   row_number() OVER (PARTITION BY v.voter_id, v.use_case, v.sandbox, (v.created_at AT TIME ZONE 'UTC')::date
                                      ORDER BY v.created_at, v.vote_id) AS nth_today,
                   EXISTS (SELECT 1 FROM generation_run r JOIN generation_job j ON j.run_id = r.run_id
                           WHERE r.user_id = v.voter_id AND j.status = 'delivered' AND j.charged > 0) AS has_run
            FROM arena_vote v JOIN app_user u ON u.user_id = v.voter_id
         )
         SELECT vote_id, use_case, choice, winner, entries, sandbox,
                CASE WHEN NOT blind THEN 'revealed before the vote'
                     WHEN account_created > now() - $1 THEN 'account too young'
                     WHEN NOT has_run THEN 'no completed run'
                     WHEN nth_today > $2 THEN 'over the daily limit'
                END AS excluded
         FROM v ORDER BY vote_id",
    )
    .bind(settings.min_account_age)
    .bind(settings.daily_cap)
    .fetch_all(db)
    .await
}

/// One board's votes, ready to fit.
#[derive(Debug, Default)]
pub struct BoardInput {
    pub entries: Vec<String>,
    pub votes: Vec<rating::Vote>,
    pub excluded: u64,
    /// Decisive two-way votes, and how many of them the image shown first (Model A) won.
    pub decisive: u64,
    pub first_won: u64,
}

/// Splits votes into boards (counted ones fitted, held-back ones counted).
pub fn boards(votes: &[LoadedVote]) -> BTreeMap<String, BoardInput> {
    let mut boards: BTreeMap<String, BoardInput> = BTreeMap::new();
    let mut index: HashMap<String, HashMap<String, u16>> = HashMap::new();
    for v in votes {
        let names: Vec<&str> = if v.sandbox { vec![DEMO] } else { vec![ALL, v.use_case.as_str()] };
        for name in names {
            let board = boards.entry(name.to_string()).or_default();
            if v.excluded.is_some() {
                board.excluded += 1;
                continue;
            }
            let ids = index.entry(name.to_string()).or_default();
            let entries: Vec<u16> = v
                .entries
                .iter()
                .map(|e| {
                    *ids.entry(e.clone()).or_insert_with(|| {
                        board.entries.push(e.clone());
                        (board.entries.len() - 1) as u16
                    })
                })
                .collect();
            if v.choice == "best" && v.entries.len() == 2 {
                board.decisive += 1;
                board.first_won += u64::from(v.winner == Some(0));
            }
            let outcome = match (v.choice.as_str(), v.winner) {
                ("best", Some(w)) => Outcome::Best(w as u8),
                ("tie", _) => Outcome::Tie,
                _ => Outcome::AllBad,
            };
            board.votes.push(rating::Vote { entries, outcome });
        }
    }
    boards
}

/// A fitted board, ready to store.
pub struct Computed {
    pub board: String,
    pub input: BoardInput,
    pub fitted: rating::Board,
    pub prices: Vec<Option<i64>>,
    pub names: Vec<String>,
    /// (a, b, votes, score of a) for every pair with direct votes.
    pub pairs: Vec<(usize, usize, u64, f64)>,
}

/// The catalog's name and 2k price of an entry (`model:variant`).
pub fn describe(catalog: &Catalog, entry: &str) -> (String, Option<i64>) {
    let (model, variant) = entry.split_once(':').unwrap_or((entry, ""));
    match catalog.model(model) {
        Some(m) => match m.variant(variant) {
            Some(v) => (m.choice(v).label(), v.price(Mode::TwoK)),
            None => (m.name.clone(), None),
        },
        None => (entry.to_string(), None),
    }
}

/// Fits one board (CPU only: call it off the async threads).
pub fn compute(board: String, input: BoardInput, catalog: &Catalog, settings: &ArenaSettings) -> Computed {
    let described: Vec<(String, Option<i64>)> = input.entries.iter().map(|e| describe(catalog, e)).collect();
    let prices: Vec<Option<i64>> = described.iter().map(|d| d.1).collect();
    let price_f: Vec<Option<f64>> = prices.iter().map(|p| p.map(|p| p as f64)).collect();
    let fitted = rating::rate(
        input.entries.len(),
        &input.votes,
        &price_f,
        &Settings { bootstrap: settings.bootstrap, seed: 0, min_votes: settings.min_votes, prior_games: 1.0 },
    );
    let mut direct: HashMap<(usize, usize), (u64, f64)> = HashMap::new();
    for vote in &input.votes {
        for (i, j, s, _) in vote.pairs() {
            let (key, score) = if i < j { ((i, j), s) } else { ((j, i), 1.0 - s) };
            let cell = direct.entry(key).or_default();
            cell.0 += 1;
            cell.1 += score;
        }
    }
    let mut pairs: Vec<(usize, usize, u64, f64)> =
        direct.into_iter().map(|((a, b), (n, score))| (a, b, n, score / n as f64)).collect();
    pairs.sort_by_key(|p| (p.0, p.1));
    Computed { board, names: described.into_iter().map(|d| d.0).collect(), input, fitted, prices, pairs }
}

/// Median generation time per entry (succeeded jobs of the last 14 days, sandbox or real).
async fn timings(db: impl PgExecutor<'_>, sandbox: bool) -> Result<HashMap<String, (i64, i64)>, sqlx::Error> {
    let rows: Vec<(String, Option<f64>, i64)> = sqlx::query_as(
        "SELECT model_slug || ':' || variant_slug,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - started_at) * 1000),
                count(*)
         FROM generation_job
         WHERE status = 'delivered' AND started_at IS NOT NULL AND finished_at > now() - interval '14 days'
           AND (provider_impl = 'sandbox') = $1
         GROUP BY 1",
    )
    .bind(sandbox)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().filter_map(|(e, m, n)| m.map(|m| (e, (m.round() as i64, n)))).collect())
}

/// Recomputes every board into new snapshots, unless another process is doing it (then
/// `Ok(false)`). Runs in the background task, never in a request.
pub async fn recompute(pool: &PgPool, catalog: &Catalog, settings: &ArenaSettings) -> anyhow::Result<bool> {
    let mut tx = crate::db::begin(pool).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('faceoff.arena.recompute'))")
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    let votes = load_votes(&mut *tx, settings).await?;
    let last_vote_id = votes.iter().map(|v| v.vote_id).max().unwrap_or(0);
    let inputs = boards(&votes);
    let (catalog_copy, settings_copy) = (catalog.clone(), *settings);
    let computed: Vec<Computed> = tokio::task::spawn_blocking(move || {
        inputs.into_iter().map(|(name, input)| compute(name, input, &catalog_copy, &settings_copy)).collect()
    })
    .await?;
    let real = timings(&mut *tx, false).await?;
    let sandbox = timings(&mut *tx, true).await?;
    for c in &computed {
        let times = if c.board == DEMO { &sandbox } else { &real };
        let snapshot_id: i64 = sqlx::query_scalar(
            "INSERT INTO arena_snapshot (board, last_vote_id, counted_votes, excluded_votes, bootstrap, decisive_votes,
                                         first_won)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING snapshot_id",
        )
        .bind(&c.board)
        .bind(last_vote_id)
        .bind(c.fitted.votes as i64)
        .bind(c.input.excluded as i64)
        .bind(settings.bootstrap as i32)
        .bind(c.input.decisive as i64)
        .bind(c.input.first_won as i64)
        .fetch_one(&mut *tx)
        .await?;
        for e in &c.fitted.entries {
            let entry = &c.input.entries[e.index];
            let (median, timed) = times.get(entry).map_or((None, 0), |(m, n)| (Some(*m), *n));
            sqlx::query(
                "INSERT INTO arena_snapshot_entry (snapshot_id, entry, name, rating, rating_lo, rating_hi, rank,
                     provisional, votes, win_rate, expected_win_rate, price, cost_per_win, cost_per_win_lo,
                     cost_per_win_hi, median_ms, timed_jobs)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            )
            .bind(snapshot_id)
            .bind(entry)
            .bind(&c.names[e.index])
            .bind(e.rating)
            .bind(e.interval.lo)
            .bind(e.interval.hi)
            .bind(e.rank.map(|r| r as i32))
            .bind(e.provisional)
            .bind(e.votes as i64)
            .bind(e.win_rate)
            .bind(e.expected_win_rate)
            .bind(c.prices[e.index])
            .bind(e.cost_per_win)
            .bind(e.cost_per_win_interval.map(|i| i.lo))
            .bind(e.cost_per_win_interval.map(|i| i.hi))
            .bind(median)
            .bind(timed)
            .execute(&mut *tx)
            .await?;
        }
        for (a, b, n, score) in &c.pairs {
            sqlx::query(
                "INSERT INTO arena_snapshot_pair (snapshot_id, entry_a, entry_b, votes, score_a) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(snapshot_id)
            .bind(&c.input.entries[*a])
            .bind(&c.input.entries[*b])
            .bind(*n as i64)
            .bind(*score)
            .execute(&mut *tx)
            .await?;
        }
    }
    // Keep the newest few snapshots of each board.
    sqlx::query(
        "DELETE FROM arena_snapshot s WHERE snapshot_id < (
             SELECT min(snapshot_id) FROM (SELECT snapshot_id FROM arena_snapshot t WHERE t.board = s.board
                                           ORDER BY snapshot_id DESC LIMIT 5) newest)",
    )
    .execute(&mut *tx)
    .await?;
    // Comparison pages quote the boards: cached copies are stale now.
    crate::db::notify_public_changed(&mut *tx).await?;
    tx.commit().await?;
    metrics::histogram!("arena_recompute_seconds").record(started.elapsed().as_secs_f64());
    tracing::info!(votes = votes.len(), boards = computed.len(), elapsed = ?started.elapsed(), "arena boards recomputed");
    Ok(true)
}

/// Whether a recompute is due: never computed and votes exist, `every` elapsed since the last
/// one, or `after` votes arrived since.
pub async fn due(pool: &PgPool, settings: &ArenaSettings) -> Result<bool, sqlx::Error> {
    let (last_at, last_id): (Option<OffsetDateTime>, Option<i64>) =
        sqlx::query_as("SELECT max(computed_at), max(last_vote_id) FROM arena_snapshot").fetch_one(pool).await?;
    let newer: i64 = sqlx::query_scalar("SELECT count(*) FROM arena_vote WHERE vote_id > $1")
        .bind(last_id.unwrap_or(0))
        .fetch_one(pool)
        .await?;
    Ok(match last_at {
        None => newer > 0,
        Some(at) => newer >= settings.recompute_after || OffsetDateTime::now_utc() - at >= settings.recompute_every,
    })
}

/// The header of a stored snapshot.
#[derive(Debug, Clone, FromRow)]
pub struct Snapshot {
    pub snapshot_id: i64,
    pub board: String,
    pub computed_at: OffsetDateTime,
    pub counted_votes: i64,
    pub excluded_votes: i64,
    pub bootstrap: i32,
    pub decisive_votes: i64,
    pub first_won: i64,
}

/// One stored row of a board.
#[derive(Debug, Clone, FromRow, serde::Serialize, utoipa::ToSchema)]
#[schema(as = LeaderboardEntry)]
pub struct Entry {
    /// `model:variant`.
    #[schema(example = "flux-2:standard")]
    pub entry: String,
    #[schema(example = "Flux 2")]
    pub name: String,
    /// Bradley–Terry rating (the board's mean is 1000).
    pub rating: f64,
    /// 95% bootstrap interval of the rating.
    pub rating_lo: f64,
    pub rating_hi: f64,
    /// 1 + the number of ranked entries whose interval lies wholly above this one's; null while
    /// provisional.
    pub rank: Option<i32>,
    /// Fewer votes than the minimum: rated but not ranked.
    pub provisional: bool,
    /// Counted votes this entry took part in.
    pub votes: i64,
    /// Observed share of its pairwise results: (wins + ½·ties) / battles, weighted per vote.
    pub win_rate: Option<f64>,
    /// The fitted chance of beating a random other entry of the board.
    pub expected_win_rate: f64,
    /// Credits per image at 1080p / 2k.
    pub price: Option<i64>,
    /// `price / expected_win_rate`: credits per expected win against the board.
    pub cost_per_win: Option<f64>,
    pub cost_per_win_lo: Option<f64>,
    pub cost_per_win_hi: Option<f64>,
    /// Median generation time of succeeded jobs in the last 14 days.
    pub median_ms: Option<i64>,
    /// How many jobs that median is taken over.
    pub timed_jobs: i64,
}

/// The newest snapshot of a board, with its rows ordered by rating.
pub async fn latest(pool: &PgPool, board: &str) -> Result<Option<(Snapshot, Vec<Entry>)>, sqlx::Error> {
    let snapshot: Option<Snapshot> = sqlx::query_as(
        "SELECT snapshot_id, board, computed_at, counted_votes, excluded_votes, bootstrap, decisive_votes, first_won
         FROM arena_snapshot WHERE board = $1 ORDER BY snapshot_id DESC LIMIT 1",
    )
    .bind(board)
    .fetch_optional(pool)
    .await?;
    let Some(snapshot) = snapshot else { return Ok(None) };
    let entries = sqlx::query_as(
        "SELECT entry, name, rating, rating_lo, rating_hi, rank, provisional, votes, win_rate, expected_win_rate, price,
                cost_per_win, cost_per_win_lo, cost_per_win_hi, median_ms, timed_jobs
         FROM arena_snapshot_entry WHERE snapshot_id = $1 ORDER BY rating DESC, entry",
    )
    .bind(snapshot.snapshot_id)
    .fetch_all(pool)
    .await?;
    Ok(Some((snapshot, entries)))
}

/// The direct record of two models (default variants or any variant: `model_a`/`model_b` are
/// model slugs) on a board's newest snapshot: (votes, share won by `model_a`).
pub async fn pair_record(
    pool: &PgPool,
    board: &str,
    model_a: &str,
    model_b: &str,
) -> Result<Option<(i64, f64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
        "SELECT p.entry_a, p.entry_b, p.votes, p.score_a FROM arena_snapshot_pair p
         WHERE p.snapshot_id = (SELECT max(snapshot_id) FROM arena_snapshot WHERE board = $1)
           AND ((split_part(p.entry_a, ':', 1) = $2 AND split_part(p.entry_b, ':', 1) = $3)
             OR (split_part(p.entry_a, ':', 1) = $3 AND split_part(p.entry_b, ':', 1) = $2))",
    )
    .bind(board)
    .bind(model_a)
    .bind(model_b)
    .fetch_all(pool)
    .await?;
    let (mut n, mut score) = (0i64, 0.0f64);
    for (a, _, votes, s) in rows {
        let for_a = if a.split(':').next() == Some(model_a) { s } else { 1.0 - s };
        n += votes;
        score += for_a * votes as f64;
    }
    Ok((n > 0).then(|| (n, score / n as f64)))
}

/// The ranked (not provisional) entries of every board's newest snapshot, best first, at most
/// `limit` per board: (board, entries). One query; the home, model and use-case pages read it.
pub async fn ranked_tops(pool: &PgPool, limit: i64) -> Result<Vec<(String, Vec<Entry>)>, sqlx::Error> {
    #[derive(FromRow)]
    struct Row {
        board: String,
        #[sqlx(flatten)]
        entry: Entry,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT board, entry, name, rating, rating_lo, rating_hi, rank, provisional, votes, win_rate,
                expected_win_rate, price, cost_per_win, cost_per_win_lo, cost_per_win_hi, median_ms, timed_jobs
         FROM (SELECT s.board, e.*, row_number() OVER (PARTITION BY s.board ORDER BY e.rating DESC, e.entry) AS n
               FROM (SELECT DISTINCT ON (board) board, snapshot_id FROM arena_snapshot
                     ORDER BY board, snapshot_id DESC) s
               JOIN arena_snapshot_entry e ON e.snapshot_id = s.snapshot_id AND NOT e.provisional) ranked
         WHERE n <= $1 ORDER BY board, n",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<(String, Vec<Entry>)> = Vec::new();
    for row in rows {
        match out.last_mut() {
            Some((board, entries)) if *board == row.board => entries.push(row.entry),
            _ => out.push((row.board, vec![row.entry])),
        }
    }
    Ok(out)
}
