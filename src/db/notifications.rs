//! One `LISTEN` connection per pool for every channel the process follows.
//!
//! The catalog, the page cache, the API-key cache, the mail sender, the webhook deliverer, the
//! live run pages and the job workers each follow a channel. Each used to hold a pooled
//! connection of its own for it: seven of a `serve` process's twenty. [`subscribe`] shares one:
//! the first subscriber of a pool starts a task that holds a single `PgListener`, `LISTEN`s to
//! every channel anyone subscribed to (a new channel is added on the live connection) and fans
//! notifications out to the subscribers of their channel. After every (re)connection each
//! subscriber is told [`Event::Connected`] (notifications sent meanwhile are lost, and it may
//! need to catch up). The task and its connection end when the last subscriber is gone.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, OnceLock, Weak},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

/// What a subscriber hears on its channel.
#[derive(Debug, Clone)]
pub enum Event {
    /// The connection listens to the channel (again): anything sent before may have been missed.
    Connected,
    /// A notification's payload.
    Notified(String),
}

/// Notifications kept per channel for a subscriber that has not read them yet; one that falls
/// further behind is told it lagged (and catches up as after a reconnection).
const BACKLOG: usize = 1024;
/// How long a lost connection waits before it is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// A subscription: its events, and whether the channel was being listened to already when it
/// was made (then no [`Event::Connected`] comes for it until the next reconnection). Keeps the
/// pool's listening task alive while held.
pub struct Subscription {
    pub events: broadcast::Receiver<Event>,
    pub live: bool,
    _hub: Arc<Hub>,
}

/// Subscribes to `channel` on `pool`'s shared listening connection.
pub fn subscribe(pool: &PgPool, channel: &str) -> Subscription {
    let hub = hub(pool);
    let (events, live, new) = {
        let mut channels = hub.channels();
        let (events, new) = match channels.senders.get(channel) {
            Some(sender) => (sender.subscribe(), false),
            None => {
                let (sender, events) = broadcast::channel(BACKLOG);
                channels.senders.insert(channel.to_string(), sender);
                (events, true)
            }
        };
        (events, channels.live.contains(channel), new)
    };
    if new {
        // The task is alive while `hub` is: it LISTENs on its live connection (or at its next
        // connection, which listens to every channel known by then).
        let _ = hub.requests.send(channel.to_string());
    }
    Subscription { events, live, _hub: hub }
}

struct Hub {
    channels: Mutex<Channels>,
    /// Channels to add to the live connection.
    requests: mpsc::UnboundedSender<String>,
    /// Stops the task when the last subscription is dropped.
    _stop: DropGuard,
}

#[derive(Default)]
struct Channels {
    senders: HashMap<String, broadcast::Sender<Event>>,
    /// The channels the connection listens to right now.
    live: HashSet<String>,
}

impl Hub {
    fn channels(&self) -> MutexGuard<'_, Channels> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `channels` are listened to (again): marks them live and tells their subscribers.
    fn connected<'a>(&self, channels: impl IntoIterator<Item = &'a String>) {
        let mut all = self.channels();
        for channel in channels {
            all.live.insert(channel.clone());
            if let Some(sender) = all.senders.get(channel) {
                // No subscriber left on it is fine.
                let _ = sender.send(Event::Connected);
            }
        }
    }

    fn deliver(&self, channel: &str, payload: &str) {
        if let Some(sender) = self.channels().senders.get(channel) {
            let _ = sender.send(Event::Notified(payload.to_string()));
        }
    }
}

/// The hub of `pool` (one per pool: a pool's clones share it), started on first use.
fn hub(pool: &PgPool) -> Arc<Hub> {
    static HUBS: OnceLock<Mutex<HashMap<usize, Weak<Hub>>>> = OnceLock::new();
    // The pool's options live inside the pool's shared state: their address names the pool
    // for as long as it exists (and a hub keeps its pool alive).
    let key = std::ptr::from_ref(pool.options()) as usize;
    let mut hubs = HUBS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    hubs.retain(|_, hub| hub.strong_count() > 0);
    if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
        return hub;
    }
    let (requests, pending) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let hub = Arc::new(Hub { channels: Mutex::default(), requests, _stop: stop.clone().drop_guard() });
    tokio::spawn(follow(pool.clone(), Arc::downgrade(&hub), pending, stop));
    hubs.insert(key, Arc::downgrade(&hub));
    hub
}

/// The listening task: (re)connects, listens to every known channel, adds new ones, delivers.
async fn follow(pool: PgPool, hub: Weak<Hub>, mut pending: mpsc::UnboundedReceiver<String>, stop: CancellationToken) {
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            let channels: Vec<String> = match hub.upgrade() {
                Some(hub) => hub.channels().senders.keys().cloned().collect(),
                None => return Ok(None),
            };
            listener.listen_all(channels.iter().map(String::as_str)).await?;
            Ok::<_, sqlx::Error>(Some((listener, channels)))
        };
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            connected = connected => connected,
        };
        match connected {
            Ok(None) => return,
            Ok(Some((mut listener, channels))) => {
                let Some(live) = hub.upgrade() else { return };
                live.connected(&channels);
                drop(live);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        Some(channel) = pending.recv() => {
                            let Some(hub) = hub.upgrade() else { return };
                            if hub.channels().live.contains(&channel) {
                                continue;
                            }
                            if let Err(err) = listener.listen(&channel).await {
                                tracing::warn!("notifications: LISTEN {channel}: {err}");
                                break;
                            }
                            hub.connected([&channel]);
                        }
                        // `try_recv`, not `recv`: `recv` reconnects silently, and the
                        // notifications sent meanwhile would be lost without anyone knowing.
                        message = listener.try_recv() => {
                            let Some(hub) = hub.upgrade() else { return };
                            match message {
                                Ok(Some(notification)) => hub.deliver(notification.channel(), notification.payload()),
                                // The connection was lost and is back (sqlx reconnects and
                                // listens again to every channel before answering): whatever
                                // was sent meanwhile is lost.
                                Ok(None) => {
                                    tracing::warn!("notifications: the connection was lost; reconnected");
                                    let live: Vec<String> = hub.channels().live.iter().cloned().collect();
                                    hub.connected(&live);
                                }
                                Err(err) => {
                                    tracing::warn!("notifications: lost the connection: {err}");
                                    break;
                                }
                            }
                        }
                    }
                }
                if let Some(hub) = hub.upgrade() {
                    hub.channels().live.clear();
                }
            }
            Err(err) => tracing::warn!("notifications: {err}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
