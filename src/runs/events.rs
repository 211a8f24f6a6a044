//! Live run updates: one `LISTEN` connection per app instance (started on first use) fans the
//! job notifications out to the SSE streams of `/runs/{id}/events`, so updates from workers in
//! any process reach browsers connected to any instance.

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::jobs::CHANNEL_UPDATED;

/// The fan-out of job notifications (run ids) to live streams.
#[derive(Clone, Default)]
pub struct RunEvents {
    sender: Arc<OnceLock<broadcast::Sender<Uuid>>>,
}

impl RunEvents {
    /// A receiver of run ids whose jobs changed; starts the listener on first use. The
    /// listener stops with `shutdown`.
    pub fn subscribe(&self, pool: &PgPool, shutdown: &CancellationToken) -> broadcast::Receiver<Uuid> {
        let sender = self.sender.get_or_init(|| {
            let (sender, _) = broadcast::channel(1024);
            tokio::spawn(listen(pool.clone(), sender.clone(), shutdown.clone()));
            sender
        });
        sender.subscribe()
    }
}

async fn listen(pool: PgPool, sender: broadcast::Sender<Uuid>, shutdown: CancellationToken) {
    crate::db::listen(&pool, CHANNEL_UPDATED, "run events listener", &shutdown, |payload| {
        if let Some(run_id) = payload.and_then(|p| p.parse::<Uuid>().ok()) {
            // No receivers is fine: nobody is watching this run.
            let _ = sender.send(run_id);
        }
        std::future::ready(())
    })
    .await;
}
