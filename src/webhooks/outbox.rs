//! The outbox: events are written in the transaction of their cause, as small rows (an event
//! and one delivery per subscribed endpoint; the payload is rendered later, at the first
//! attempt), and announced on [`CHANNEL`] when that transaction commits. Nothing here can fail
//! or hold up its caller's transaction: users without endpoints cost one indexed read, and the
//! writes run in a savepoint whose failure is logged and rolled back while the caller goes on.

use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use super::EventType;

/// Channel announcing new deliveries; the delivery tasks listen to it.
pub const CHANNEL: &str = "faceoff_webhook_queued";

/// The events `user_id` has endpoints for.
async fn subscribed(db: &mut PgConnection, user_id: Uuid) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT unnest(events) FROM webhook_endpoint WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(db)
        .await
}

/// Runs `write` in a savepoint of the caller's transaction; its failure is logged and undone,
/// never returned.
async fn in_savepoint<F>(db: &mut PgConnection, what: &str, write: F)
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> futures::future::BoxFuture<'c, Result<u64, sqlx::Error>>,
{
    let mut savepoint = match db.begin().await {
        Ok(savepoint) => savepoint,
        Err(err) => {
            tracing::warn!("webhook outbox ({what}): no savepoint: {err}");
            return;
        }
    };
    match write(&mut savepoint).await {
        Ok(0) => {
            let _ = savepoint.rollback().await;
        }
        Ok(_) => {
            let notified = sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut *savepoint).await;
            let committed = match notified {
                Ok(_) => savepoint.commit().await,
                Err(err) => Err(err),
            };
            if let Err(err) = committed {
                tracing::warn!("webhook outbox ({what}): {err}");
            }
        }
        Err(err) => {
            tracing::warn!("webhook outbox ({what}) left out: {err}");
            let _ = savepoint.rollback().await;
        }
    }
}

/// Inserts the event (unless its unique key exists) and a delivery to every endpoint of the
/// user subscribed to it; returns how many deliveries.
const INSERT_EVENT: &str = "WITH event AS (
        INSERT INTO webhook_event (event_id, user_id, type, run_id, job_id, available)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT DO NOTHING
        RETURNING event_id
    )
    INSERT INTO webhook_delivery (delivery_id, event_id, endpoint_id)
    SELECT gen_random_uuid(), event.event_id, p.endpoint_id
    FROM event JOIN webhook_endpoint p ON p.user_id = $2 AND $3 = ANY (p.events)
    WHERE $3 <> 'credits.low' OR (p.credits_low_threshold <= $7 AND p.credits_low_threshold > $6)";

/// In the transaction of a job's settlement (after the job's row is updated): `job.failed` when
/// it was not delivered, and `run.completed` when it was the last unsettled job of its run.
/// A blind run whose names are not revealed sends no `job.failed`: which job failed, and when,
/// would tell its model before the vote (its `run.completed` carries the masked view).
pub async fn job_settled(db: &mut PgConnection, user_id: Uuid, run_id: Uuid, job_id: Uuid, delivered: bool) {
    let subscribed = match subscribed(db, user_id).await {
        Ok(events) => events,
        Err(err) => {
            tracing::warn!("webhook outbox: reading endpoints: {err}");
            return;
        }
    };
    let wants = |event: EventType| subscribed.iter().any(|e| e == event.as_str());
    if !delivered && wants(EventType::JobFailed) {
        in_savepoint(db, "job.failed", move |tx| {
            Box::pin(async move {
                let blind_and_unrevealed: Option<bool> =
                    sqlx::query_scalar("SELECT blind AND revealed_at IS NULL FROM generation_run WHERE run_id = $1")
                        .bind(run_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if blind_and_unrevealed.unwrap_or(false) {
                    return Ok(0);
                }
                Ok(sqlx::query(INSERT_EVENT)
                    .bind(Uuid::now_v7())
                    .bind(user_id)
                    .bind(EventType::JobFailed.as_str())
                    .bind(run_id)
                    .bind(job_id)
                    .bind(None::<i64>)
                    .bind(None::<i64>)
                    .execute(tx)
                    .await?
                    .rows_affected())
            })
        })
        .await;
    }
    if wants(EventType::RunCompleted) {
        in_savepoint(db, "run.completed", move |tx| {
            Box::pin(async move {
                // Sibling jobs settle in transactions of their own: the run's row lock orders
                // them, so the last one to commit sees every other one settled.
                sqlx::query("SELECT 1 FROM generation_run WHERE run_id = $1 FOR UPDATE").bind(run_id).execute(&mut *tx).await?;
                let open: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM generation_job WHERE run_id = $1 AND status IN ('queued', 'running'))",
                )
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
                if open {
                    return Ok(0);
                }
                Ok(sqlx::query(INSERT_EVENT)
                    .bind(Uuid::now_v7())
                    .bind(user_id)
                    .bind(EventType::RunCompleted.as_str())
                    .bind(run_id)
                    .bind(None::<Uuid>)
                    .bind(None::<i64>)
                    .bind(None::<i64>)
                    .execute(tx)
                    .await?
                    .rows_affected())
            })
        })
        .await;
    }
}

/// In the transaction that reserved credits for a run: `credits.low` for each subscribed
/// endpoint whose threshold the balance just fell below (`before` ≥ threshold > `after`).
pub async fn credits_spent(db: &mut PgConnection, user_id: Uuid, before: i64, after: i64) {
    match subscribed(db, user_id).await {
        Ok(events) if events.iter().any(|e| e == EventType::CreditsLow.as_str()) => {}
        Ok(_) => return,
        Err(err) => {
            tracing::warn!("webhook outbox: reading endpoints: {err}");
            return;
        }
    }
    in_savepoint(db, "credits.low", move |tx| {
        Box::pin(async move {
            Ok(sqlx::query(INSERT_EVENT)
                .bind(Uuid::now_v7())
                .bind(user_id)
                .bind(EventType::CreditsLow.as_str())
                .bind(None::<Uuid>)
                .bind(None::<Uuid>)
                .bind(after)
                .bind(before)
                .execute(tx)
                .await?
                .rows_affected())
        })
    })
    .await;
}
