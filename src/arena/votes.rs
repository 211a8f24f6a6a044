//! Votes on blind runs: who may vote on what, what a vote means, and changing it within the
//! window. The run's owner votes once per run (the row is unique per run) after every job is
//! settled, on a run with at least two delivered images; a vote may be changed until
//! `locked_at`. Failed and blocked jobs are left out of the vote (never a loss).

use sqlx::{FromRow, PgExecutor, PgPool};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{jobs::JobStatus, runs::Run};

/// How long a vote may be changed.
pub const CHANGE_WINDOW: Duration = Duration::minutes(5);

/// The use case votes of runs without one count under.
pub const OTHER: &str = "other";

/// A stored vote.
#[derive(Debug, Clone, FromRow)]
pub struct Vote {
    pub vote_id: i64,
    pub run_id: Uuid,
    pub voter_id: Uuid,
    pub use_case: String,
    pub choice: String,
    pub winner: Option<i16>,
    pub entries: Vec<String>,
    pub sandbox: bool,
    pub blind: bool,
    pub created_at: OffsetDateTime,
    pub locked_at: OffsetDateTime,
}

impl Vote {
    pub fn changeable(&self, now: OffsetDateTime) -> bool {
        now < self.locked_at
    }
}

/// What the voter chose, by display label (`A`…`D` among all shown results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Best(usize),
    Tie,
    AllBad,
}

impl Choice {
    /// `A`…`D`, `tie`, `both_bad` / `all_bad`.
    pub fn parse(raw: &str) -> Option<Choice> {
        match raw.trim() {
            "tie" => Some(Choice::Tie),
            "both_bad" | "all_bad" => Some(Choice::AllBad),
            one if one.len() == 1 => {
                let c = one.as_bytes()[0].to_ascii_uppercase();
                (b'A'..=b'D').contains(&c).then(|| Choice::Best(usize::from(c - b'A')))
            }
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VoteError {
    #[error("only blind runs are voted on")]
    NotBlind,
    #[error("the images are still being generated; vote once they have all arrived")]
    NotReady,
    #[error("a run needs at least two delivered images to be voted on")]
    TooFewImages,
    #[error("that choice is not one of this run's options")]
    BadChoice,
    #[error("votes can be changed only within {} minutes", CHANGE_WINDOW.whole_minutes())]
    Locked,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The vote on a run, if any.
pub async fn find(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Option<Vote>, sqlx::Error> {
    sqlx::query_as(
        "SELECT vote_id, run_id, voter_id, use_case, choice, winner, entries, sandbox, blind, created_at, locked_at
         FROM arena_vote WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(db)
    .await
}

/// The vote on `run`. Only blind runs are voted on ([`cast`] refuses the others), so the
/// others cost no query.
pub async fn of_run(db: impl PgExecutor<'_>, run: &Run) -> Result<Option<Vote>, sqlx::Error> {
    if !run.blind {
        return Ok(None);
    }
    find(db, run.run_id).await
}

/// The votes on these runs (history).
pub async fn for_runs(db: impl PgExecutor<'_>, run_ids: &[Uuid]) -> Result<Vec<Vote>, sqlx::Error> {
    sqlx::query_as(
        "SELECT vote_id, run_id, voter_id, use_case, choice, winner, entries, sandbox, blind, created_at, locked_at
         FROM arena_vote WHERE run_id = ANY($1)",
    )
    .bind(run_ids)
    .fetch_all(db)
    .await
}

/// A user's votes, newest first (their own board).
pub async fn of_voter(db: impl PgExecutor<'_>, voter_id: Uuid, limit: i64) -> Result<Vec<Vote>, sqlx::Error> {
    sqlx::query_as(
        "SELECT vote_id, run_id, voter_id, use_case, choice, winner, entries, sandbox, blind, created_at, locked_at
         FROM arena_vote WHERE voter_id = $1 ORDER BY created_at DESC LIMIT $2",
    )
    .bind(voter_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Whether a run's names may be shown: not blind, voted on, or revealed.
pub fn revealed(run: &Run, vote: Option<&Vote>) -> bool {
    !run.blind || vote.is_some() || run.revealed_at.is_some()
}

/// Records or changes the owner's vote on `run` (the caller checked ownership). `choice` names
/// a result by its display label among all the run's results.
pub async fn cast(pool: &PgPool, run: &Run, choice: Choice) -> Result<Vote, VoteError> {
    if !run.blind {
        return Err(VoteError::NotBlind);
    }
    let mut tx = crate::db::begin(pool).await?;
    // One vote at a time per run: the run row is the lock.
    sqlx::query("SELECT 1 FROM generation_run WHERE run_id = $1 FOR UPDATE").bind(run.run_id).execute(&mut *tx).await?;
    let jobs: Vec<(i16, String, JobStatus, Option<String>)> = sqlx::query_as(
        "SELECT position, model_slug || ':' || variant_slug, status, provider_impl
         FROM generation_job WHERE run_id = $1 ORDER BY position",
    )
    .bind(run.run_id)
    .fetch_all(&mut *tx)
    .await?;
    if jobs.iter().any(|(_, _, status, _)| !status.is_settled()) {
        return Err(VoteError::NotReady);
    }
    let shown = run.in_shown_order(&jobs, |j| j.0);
    // The labelled results; the entries are the delivered ones among them.
    let delivered: Vec<(usize, &String, bool)> = shown
        .iter()
        .enumerate()
        .filter(|(_, j)| j.2 == JobStatus::Delivered)
        .map(|(label, j)| (label, &j.1, j.3.as_deref() == Some("sandbox")))
        .collect();
    if delivered.len() < 2 {
        return Err(VoteError::TooFewImages);
    }
    let (kind, winner) = match choice {
        Choice::Best(label) => {
            let index = delivered.iter().position(|(l, _, _)| *l == label).ok_or(VoteError::BadChoice)?;
            ("best", Some(index as i16))
        }
        Choice::Tie if delivered.len() == 2 => ("tie", None),
        Choice::Tie => return Err(VoteError::BadChoice),
        Choice::AllBad => ("all_bad", None),
    };
    let entries: Vec<String> = delivered.iter().map(|(_, e, _)| (*e).clone()).collect();
    let sandbox = delivered.iter().any(|(_, _, s)| *s);
    let now = OffsetDateTime::now_utc();
    let existing = find(&mut *tx, run.run_id).await?;
    let vote = match existing {
        Some(vote) if !vote.changeable(now) => return Err(VoteError::Locked),
        Some(vote) => {
            sqlx::query_as(
                "UPDATE arena_vote SET choice = $2, winner = $3 WHERE vote_id = $1
                 RETURNING vote_id, run_id, voter_id, use_case, choice, winner, entries, sandbox, blind, created_at, locked_at",
            )
            .bind(vote.vote_id)
            .bind(kind)
            .bind(winner)
            .fetch_one(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_as(
                "INSERT INTO arena_vote (run_id, voter_id, use_case, choice, winner, entries, sandbox, blind, locked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9)
                 RETURNING vote_id, run_id, voter_id, use_case, choice, winner, entries, sandbox, blind, created_at, locked_at",
            )
            .bind(run.run_id)
            .bind(run.user_id)
            .bind(run.use_case.as_deref().unwrap_or(OTHER))
            .bind(kind)
            .bind(winner)
            .bind(&entries)
            .bind(sandbox)
            .bind(run.blind && run.revealed_at.is_none())
            .bind(CHANGE_WINDOW)
            .fetch_one(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    metrics::counter!("arena_votes_total").increment(1);
    Ok(vote)
}

/// The owner skips the vote and sees the names: a vote cast afterwards never counts.
pub async fn reveal(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE generation_run SET revealed_at = now() WHERE run_id = $1 AND blind AND revealed_at IS NULL")
        .bind(run_id)
        .execute(db)
        .await?;
    Ok(())
}
