//! Live run updates: one `LISTEN` connection per app instance (started on first use) fans the
//! job notifications out to the SSE streams of `/runs/{id}/events`, so updates from workers in
//! any process reach browsers connected to any instance. Notifications sent while the listener
//! was (re)connecting are lost to it: after every (re)connection it tells every stream to
//! reload ([`RunSignal::Resync`]).

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::jobs::CHANNEL_UPDATED;

/// What the listener tells the live streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSignal {
    /// A job of this run changed.
    Changed(Uuid),
    /// Anything may have changed (the listener reconnected): every stream reloads.
    Resync,
}

/// The fan-out of job notifications to live streams.
#[derive(Clone, Default)]
pub struct RunEvents {
    sender: Arc<OnceLock<broadcast::Sender<RunSignal>>>,
}

impl RunEvents {
    /// A receiver of [`RunSignal`]s; starts the listener on first use. The listener stops with
    /// `shutdown`.
    pub fn subscribe(&self, pool: &PgPool, shutdown: &CancellationToken) -> broadcast::Receiver<RunSignal> {
        let sender = self.sender.get_or_init(|| {
            let (sender, _) = broadcast::channel(1024);
            tokio::spawn(listen(pool.clone(), sender.clone(), shutdown.clone()));
            sender
        });
        sender.subscribe()
    }
}

async fn listen(pool: PgPool, sender: broadcast::Sender<RunSignal>, shutdown: CancellationToken) {
    crate::db::listen(&pool, CHANNEL_UPDATED, "run events listener", &shutdown, |payload| {
        let signal = match payload {
            // (Re)connected: notifications may have been missed meanwhile.
            None => Some(RunSignal::Resync),
            Some(payload) => payload.parse::<Uuid>().ok().map(RunSignal::Changed),
        };
        if let Some(signal) = signal {
            // No receivers is fine: nobody is watching.
            let _ = sender.send(signal);
        }
        std::future::ready(())
    })
    .await;
}
