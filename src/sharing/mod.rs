//! Sharing runs: publications (an unguessable public address for a run its owner chose to show),
//! hiding by administrators, users' reports, the galleries of published runs that the
//! comparison and model pages show, the social card image ([`card`]) and the "download all"
//! ZIP ([`download`]). The public pages and the owner's buttons are in [`pages`].
//!
//! Invariants (the database enforces them too, see the `sharing` migration):
//! - A share id is 128 random bits (base64url, 22 characters); it is the only way to the page.
//! - A run has at most one live publication (`run_share_live_key`). Unpublishing ends the row for
//!   good: publishing again makes a new address, so an old link never comes back to life.
//! - A hidden publication (an administrator's decision) is never served again, and its run
//!   cannot be published again by its owner.
//! - Public answers come from the database on every request (no in-process cache), so an
//!   unpublished or hidden run answers 404 at once; every change is announced on
//!   [`CHANNEL_PUBLIC_CHANGED`] (in the same transaction) for caches of public pages.
//! - Blind runs are shareable only after their owner's vote (the arena's result is not given
//!   away before), and only settled runs with at least one image.

use base64::Engine;
use rand::RngCore;
use sqlx::{FromRow, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    jobs::{Job, JobStatus},
    runs::Run,
};

pub mod card;
pub mod download;
pub mod pages;

/// Announced (payload: the share id) when a publication starts, ends or is hidden.
pub const CHANNEL_PUBLIC_CHANGED: &str = "faceoff_public_changed";
/// How long browsers and CDNs may keep a public share page (signed-out view) and its images,
/// card and ZIP: after an unpublish or a hide our server answers 404 at once, copies already
/// in a cache may live this long.
pub const PUBLIC_PAGE_MAX_AGE: u32 = 60;
pub const PUBLIC_IMAGE_MAX_AGE: u32 = 300;
/// Reports one user may file per hour.
pub const REPORTS_PER_HOUR: i64 = 5;
pub const MAX_REASON_CHARS: usize = 1000;
/// Published runs per gallery page.
pub const GALLERY_PAGE: i64 = 6;

/// A publication.
#[derive(Debug, Clone, FromRow)]
pub struct Share {
    pub share_id: String,
    pub run_id: Uuid,
    pub user_id: Uuid,
    pub sandbox: bool,
    pub published_at: OffsetDateTime,
    pub unpublished_at: Option<OffsetDateTime>,
    pub hidden_at: Option<OffsetDateTime>,
    pub card_key: Option<String>,
}

const SHARE_COLUMNS: &str = "share_id, run_id, user_id, sandbox, published_at, unpublished_at, hidden_at, card_key";

impl Share {
    pub fn path(&self) -> String {
        format!("/s/{}", self.share_id)
    }
}

/// A fresh share id: 16 random bytes from the OS-seeded CSPRNG, base64url without padding.
pub fn new_share_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `raw` could be a share id (anything else is a 404 without a query).
pub fn plausible_id(raw: &str) -> bool {
    (22..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The live (published, not hidden) publication with this id.
pub async fn find_live(db: impl PgExecutor<'_>, share_id: &str) -> Result<Option<Share>, sqlx::Error> {
    if !plausible_id(share_id) {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {SHARE_COLUMNS} FROM run_share WHERE share_id = $1 AND unpublished_at IS NULL AND hidden_at IS NULL"
    );
    sqlx::query_as::<_, Share>(sqlx::AssertSqlSafe(sql)).bind(share_id).fetch_optional(db).await
}

/// Any publication with this id (admin: hiding a report's run).
pub async fn find(db: impl PgExecutor<'_>, share_id: &str) -> Result<Option<Share>, sqlx::Error> {
    if !plausible_id(share_id) {
        return Ok(None);
    }
    let sql = format!("SELECT {SHARE_COLUMNS} FROM run_share WHERE share_id = $1");
    sqlx::query_as::<_, Share>(sqlx::AssertSqlSafe(sql)).bind(share_id).fetch_optional(db).await
}

/// The run's live publication, if any.
pub async fn live_for_run(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Option<Share>, sqlx::Error> {
    let sql = format!(
        "SELECT {SHARE_COLUMNS} FROM run_share WHERE run_id = $1 AND unpublished_at IS NULL AND hidden_at IS NULL"
    );
    sqlx::query_as::<_, Share>(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_optional(db).await
}

/// Where a run stands for sharing: its live publication, if any, and whether an administrator
/// hid one (then it may not be published again).
#[derive(Debug, Clone, Default)]
pub struct Standing {
    pub live: Option<Share>,
    pub hidden: bool,
}

/// A run's [`Standing`] in one statement (the run page's share box).
pub async fn standing(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<Standing, sqlx::Error> {
    let sql = format!(
        "SELECT {SHARE_COLUMNS} FROM run_share
         WHERE run_id = $1 AND (hidden_at IS NOT NULL OR unpublished_at IS NULL)"
    );
    let rows = sqlx::query_as::<_, Share>(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_all(db).await?;
    let hidden = rows.iter().any(|s| s.hidden_at.is_some());
    let live = rows.into_iter().find(|s| s.hidden_at.is_none() && s.unpublished_at.is_none());
    Ok(Standing { live, hidden })
}

/// Whether an administrator hid a publication of this run.
pub async fn was_hidden(db: impl PgExecutor<'_>, run_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM run_share WHERE run_id = $1 AND hidden_at IS NOT NULL)")
        .bind(run_id)
        .fetch_one(db)
        .await
}

async fn notify(db: impl PgExecutor<'_>, share_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL_PUBLIC_CHANGED).bind(share_id).execute(db).await?;
    Ok(())
}

/// The jobs a public page shows: the delivered ones, in the run's display order. The n-th
/// (from 1) is served at `/s/{share_id}/images/{n}`.
pub fn public_jobs<'a>(run: &Run, jobs: &'a [Job]) -> Vec<&'a Job> {
    run.in_shown_order(jobs, |j| j.position).into_iter().filter(|j| j.status() == JobStatus::Delivered).collect()
}

/// Whether the job's image came from the sandbox (a local stand-in rendering).
pub fn is_sandbox(job: &Job) -> bool {
    job.route.as_deref().is_none_or(|r| r.starts_with("sandbox"))
}

/// Why a run cannot be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the run is still generating; publish it once every image has arrived")]
    NotSettled,
    #[error("the run has no image to show")]
    NoImages,
    #[error("vote on this blind run first: it can be shared once you have voted")]
    NotVoted,
    #[error("an administrator hid this run; it cannot be published again")]
    Hidden,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Publishes the run (its owner checked by the caller): its live publication, new or the one
/// it already had. One transaction, the run row locked so two clicks make one publication.
pub async fn publish(pool: &PgPool, run: &Run, jobs: &[Job], voted: bool) -> Result<Share, PublishError> {
    if !jobs.iter().all(|j| j.status().is_settled()) {
        return Err(PublishError::NotSettled);
    }
    let shown = public_jobs(run, jobs);
    if shown.is_empty() {
        return Err(PublishError::NoImages);
    }
    if run.blind && !voted {
        return Err(PublishError::NotVoted);
    }
    let mut tx = crate::db::begin(pool).await?;
    sqlx::query("SELECT 1 FROM generation_run WHERE run_id = $1 FOR UPDATE").bind(run.run_id).execute(&mut *tx).await?;
    if was_hidden(&mut *tx, run.run_id).await? {
        return Err(PublishError::Hidden);
    }
    if let Some(share) = live_for_run(&mut *tx, run.run_id).await? {
        return Ok(share);
    }
    let sandbox = shown.iter().any(|j| is_sandbox(j));
    let sql = format!(
        "INSERT INTO run_share (share_id, run_id, user_id, sandbox,
                                card_key) VALUES ($1, $2, $3, $4,
                                (SELECT card_key FROM run_share WHERE run_id = $2 AND card_key IS NOT NULL LIMIT 1))
         RETURNING {SHARE_COLUMNS}"
    );
    let share = sqlx::query_as::<_, Share>(sqlx::AssertSqlSafe(sql))
        .bind(new_share_id())
        .bind(run.run_id)
        .bind(run.user_id)
        .bind(sandbox)
        .fetch_one(&mut *tx)
        .await?;
    notify(&mut *tx, &share.share_id).await?;
    tx.commit().await?;
    tracing::info!(run_id = %run.run_id, "run published");
    Ok(share)
}

/// Ends the run's live publication (the caller checked the owner). False: it had none.
pub async fn unpublish(pool: &PgPool, run_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let ended: Option<String> = sqlx::query_scalar(
        "UPDATE run_share SET unpublished_at = now()
         WHERE run_id = $1 AND unpublished_at IS NULL AND hidden_at IS NULL RETURNING share_id",
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(share_id) = &ended {
        notify(&mut *tx, share_id).await?;
    }
    tx.commit().await?;
    Ok(ended.is_some())
}

/// An administrator hides a publication: it disappears everywhere at once, its open reports
/// are resolved. False: no such live publication.
pub async fn hide(pool: &PgPool, share_id: &str, admin: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    if !plausible_id(share_id) {
        return Ok(false);
    }
    let mut tx = crate::db::begin(pool).await?;
    let hidden: Option<String> = sqlx::query_scalar(
        "UPDATE run_share SET hidden_at = now(), hidden_by = $2, hidden_reason = NULLIF(left(btrim($3), 500), '')
         WHERE share_id = $1 AND hidden_at IS NULL AND unpublished_at IS NULL RETURNING share_id",
    )
    .bind(share_id)
    .bind(admin)
    .bind(reason)
    .fetch_optional(&mut *tx)
    .await?;
    if hidden.is_some() {
        sqlx::query("UPDATE run_report SET resolved_at = now() WHERE share_id = $1 AND resolved_at IS NULL")
            .bind(share_id)
            .execute(&mut *tx)
            .await?;
        notify(&mut *tx, share_id).await?;
    }
    tx.commit().await?;
    if hidden.is_some() {
        tracing::info!(%admin, "published run hidden by an administrator");
    }
    Ok(hidden.is_some())
}

/// Records the stored card of the run (for this and later publications of it).
pub async fn set_card(db: impl PgExecutor<'_>, run_id: Uuid, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE run_share SET card_key = $2 WHERE run_id = $1 AND card_key IS DISTINCT FROM $2")
        .bind(run_id)
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}

/// Why a report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("say in a few words what is wrong (3 to {MAX_REASON_CHARS} characters)")]
    InvalidReason,
    #[error("you reported this run already; an administrator will look at it")]
    AlreadyReported,
    #[error("you have sent many reports in the last hour; try again later")]
    TooMany,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Files `reporter`'s report of a live publication: at most [`REPORTS_PER_HOUR`] per user (the
/// count is read under a per-user advisory lock, so parallel requests cannot pass it), one per
/// publication.
pub async fn report(pool: &PgPool, share: &Share, reporter: Uuid, reason: &str) -> Result<(), ReportError> {
    let reason = reason.trim();
    if !(3..=MAX_REASON_CHARS).contains(&reason.chars().count()) {
        return Err(ReportError::InvalidReason);
    }
    let mut tx = crate::db::begin(pool).await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('run_report:' || $1::text, 0))")
        .bind(reporter)
        .execute(&mut *tx)
        .await?;
    let recent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_report WHERE reporter_id = $1 AND created_at > now() - interval '1 hour'",
    )
    .bind(reporter)
    .fetch_one(&mut *tx)
    .await?;
    if recent >= REPORTS_PER_HOUR {
        return Err(ReportError::TooMany);
    }
    let inserted = sqlx::query("INSERT INTO run_report (share_id, reporter_id, reason) VALUES ($1, $2, $3)")
        .bind(&share.share_id)
        .bind(reporter)
        .bind(reason)
        .execute(&mut *tx)
        .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("run_report_once_key") => {
            return Err(ReportError::AlreadyReported);
        }
        Err(err) => return Err(err.into()),
    }
    tx.commit().await?;
    Ok(())
}

/// An open report, as the admin page lists it.
#[derive(Debug, Clone, FromRow)]
pub struct OpenReport {
    pub report_id: i64,
    pub share_id: String,
    pub prompt: String,
    pub reason: String,
    pub reporter_email: String,
    pub created_at: OffsetDateTime,
    /// The publication is still live (not unpublished by its owner).
    pub live: bool,
}

/// Unresolved reports, oldest first.
pub async fn open_reports(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<OpenReport>, sqlx::Error> {
    sqlx::query_as::<_, OpenReport>(
        "SELECT rr.report_id, rr.share_id, r.prompt, rr.reason, u.email AS reporter_email, rr.created_at,
                (s.unpublished_at IS NULL AND s.hidden_at IS NULL) AS live
         FROM run_report rr
         JOIN run_share s USING (share_id)
         JOIN generation_run r ON r.run_id = s.run_id
         JOIN app_user u ON u.user_id = rr.reporter_id
         WHERE rr.resolved_at IS NULL
         ORDER BY rr.created_at, rr.report_id
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks a report dealt with, without hiding the run.
pub async fn dismiss_report(db: impl PgExecutor<'_>, report_id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE run_report SET resolved_at = now() WHERE report_id = $1 AND resolved_at IS NULL")
        .bind(report_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A published run in a gallery.
#[derive(Debug, Clone, FromRow)]
pub struct GalleryRun {
    pub share_id: String,
    pub sandbox: bool,
    pub published_at: OffsetDateTime,
    pub run_id: Uuid,
}

/// The live publications of runs that had both models `a` and `b` (delivered), for
/// `use_case` (None: any), newest first, after the keyset position `after`
/// (`published_at`, `share_id`); one more than `limit` to tell whether more follow.
pub async fn gallery_for_pair(
    db: impl PgExecutor<'_>,
    a: &str,
    b: &str,
    use_case: Option<&str>,
    after: Option<(OffsetDateTime, String)>,
    limit: i64,
) -> Result<Vec<GalleryRun>, sqlx::Error> {
    let (at, id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
    sqlx::query_as::<_, GalleryRun>(
        "SELECT s.share_id, s.sandbox, s.published_at, s.run_id
         FROM run_share s JOIN generation_run r USING (run_id)
         WHERE s.unpublished_at IS NULL AND s.hidden_at IS NULL
           AND ($3::text IS NULL OR r.use_case = $3)
           AND EXISTS (SELECT 1 FROM generation_job j WHERE j.run_id = s.run_id AND j.model_slug = $1 AND j.status = 'delivered')
           AND EXISTS (SELECT 1 FROM generation_job j WHERE j.run_id = s.run_id AND j.model_slug = $2 AND j.status = 'delivered')
           AND ($4::timestamptz IS NULL OR (s.published_at, s.share_id) < ($4, $5))
         ORDER BY s.published_at DESC, s.share_id DESC
         LIMIT $6",
    )
    .bind(a)
    .bind(b)
    .bind(use_case)
    .bind(at)
    .bind(id)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// A published run as a gallery shows it: its prompt, its thumbnails (public addresses).
#[derive(Debug, Clone)]
pub struct GalleryEntry {
    pub href: String,
    pub prompt: String,
    pub sandbox: bool,
    pub published: String,
    /// One per image, in display order.
    pub thumbs: Vec<Thumb>,
}

/// One image of a gallery entry.
#[derive(Debug, Clone)]
pub struct Thumb {
    pub name: String,
    pub model: String,
    /// Its public thumbnail: `/s/{share_id}/thumbs/{n}`.
    pub url: String,
    pub sandbox: bool,
}

/// The gallery entries of `rows` (their runs and jobs read in two queries).
pub async fn gallery_entries(pool: &PgPool, rows: &[GalleryRun]) -> Result<Vec<GalleryEntry>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.run_id).collect();
    let runs = crate::runs::find_many(pool, &ids).await?;
    let jobs = crate::jobs::for_runs(pool, &ids).await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let run = runs.iter().find(|r| r.run_id == row.run_id)?;
            let mine: Vec<Job> = jobs.iter().filter(|j| j.run_id == row.run_id).cloned().collect();
            let thumbs = public_jobs(run, &mine)
                .iter()
                .enumerate()
                .map(|(i, j)| Thumb {
                    name: j.choice().label(),
                    model: j.model_slug.clone(),
                    url: format!("/s/{}/thumbs/{}", row.share_id, i + 1),
                    sandbox: is_sandbox(j),
                })
                .collect();
            Some(GalleryEntry {
                href: format!("/s/{}", row.share_id),
                prompt: run.prompt.clone(),
                sandbox: row.sandbox,
                published: row
                    .published_at
                    .format(time::macros::format_description!("[year]-[month]-[day]"))
                    .unwrap_or_default(),
                thumbs,
            })
        })
        .collect())
}

/// The newest live publications, of any run (the home page) or only of those with a delivered
/// image of `model` (its page).
pub async fn recent(db: impl PgExecutor<'_>, model: Option<&str>, limit: i64) -> Result<Vec<GalleryRun>, sqlx::Error> {
    sqlx::query_as::<_, GalleryRun>(
        "SELECT s.share_id, s.sandbox, s.published_at, s.run_id
         FROM run_share s
         WHERE s.unpublished_at IS NULL AND s.hidden_at IS NULL
           AND ($1::text IS NULL OR EXISTS (SELECT 1 FROM generation_job j
                                             WHERE j.run_id = s.run_id AND j.model_slug = $1 AND j.status = 'delivered'))
         ORDER BY s.published_at DESC, s.share_id DESC
         LIMIT $2",
    )
    .bind(model)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The publications of a user, for the data export.
pub async fn export(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<serde_json::Value, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT json_build_object(
            'shares', (SELECT COALESCE(json_agg(json_build_object(
                           'share_id', share_id, 'run_id', run_id, 'published_at', published_at,
                           'unpublished_at', unpublished_at, 'hidden_at', hidden_at) ORDER BY published_at), '[]'::json)
                       FROM run_share WHERE user_id = $1),
            'reports', (SELECT COALESCE(json_agg(json_build_object(
                            'share_id', share_id, 'reason', reason, 'created_at', created_at) ORDER BY created_at), '[]'::json)
                        FROM run_report WHERE reporter_id = $1))",
    )
    .bind(user_id)
    .fetch_one(db)
    .await
}

/// Account deletion: the user's reports and publications (and the reports of them) go; an
/// administrator's name is taken off the runs they hid. Run inside the deletion's transaction,
/// before the runs are deleted. Returns the share ids ended, to announce.
pub async fn delete_user_data(db: &mut sqlx::PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM run_report WHERE reporter_id = $1
            OR share_id IN (SELECT share_id FROM run_share WHERE user_id = $1)",
        "UPDATE run_share SET hidden_by = NULL WHERE hidden_by = $1",
        "SELECT pg_notify('faceoff_public_changed', share_id) FROM run_share
         WHERE user_id = $1 AND unpublished_at IS NULL AND hidden_at IS NULL",
        "DELETE FROM run_share WHERE user_id = $1",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).execute(&mut *db).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_ids_are_long_random_and_url_safe() {
        let a = new_share_id();
        let b = new_share_id();
        assert_eq!(a.len(), 22, "128 bits in base64url");
        assert_ne!(a, b);
        assert!(plausible_id(&a) && plausible_id(&b));
        assert!(!plausible_id("short") && !plausible_id("../../etc/passwd/aaaaaaaaaaaaaa"));
    }
}
