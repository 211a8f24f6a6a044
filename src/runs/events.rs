//! Live run updates: one `LISTEN` connection per app instance (started on first use) fans the
//! job notifications out to the SSE streams of `/runs/{id}/events`, so updates from workers in
//! any process reach browsers connected to any instance.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};
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
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!("run events listener: {err}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        if let Err(err) = listener.listen(CHANNEL_UPDATED).await {
            tracing::warn!("run events listener: {err}");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                message = listener.recv() => match message {
                    Ok(n) => {
                        if let Ok(run_id) = n.payload().parse::<Uuid>() {
                            // No receivers is fine: nobody is watching this run.
                            let _ = sender.send(run_id);
                        }
                    }
                    Err(err) => {
                        tracing::warn!("run events listener: {err}");
                        break;
                    }
                }
            }
        }
    }
}
