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
//!
//! The sending side for the busiest channels is [`announce`]: after its transaction commits, a
//! caller hands the notification to the pool's announcer, which sends whatever has gathered in
//! one transaction of its own. A `NOTIFY` inside a transaction holds PostgreSQL's notify lock
//! from its commit until the commit is flushed to disk, so transactions that notify commit one
//! after another, one disk flush each, across the whole cluster: on a 2-core machine that capped
//! pgbench's TPC-B at 1,300 tps with one `NOTIFY` added (2,750 without), and every run creation
//! and job change notified. The announcer's transactions write nothing else, so they do not
//! wait for the flush (`synchronous_commit = off`: a notification is never durable anyway), and
//! one carries every notification queued meanwhile (duplicates sent once). A notification the
//! process had not sent when it died is lost, as are those sent while a listener reconnects:
//! workers poll for jobs, and live pages reload every `Config::live_refresh` (10 s) and
//! whenever their listener reconnects.

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

/// The announcer of a pool: its task takes `(channel, payload)`s from here.
type Announcer = mpsc::UnboundedSender<(&'static str, String)>;

/// Notifications gathered into one transaction at most (more wait for the next).
const BATCH: usize = 512;

/// Sends `NOTIFY channel, payload` on `pool` soon, with whatever else has been announced
/// meanwhile (see the module's documentation). Call it once the change it announces has
/// committed. Never blocks or fails: a notification that cannot be sent is logged and dropped.
pub fn announce(pool: &PgPool, channel: &'static str, payload: String) {
    static ANNOUNCERS: OnceLock<Mutex<HashMap<usize, Announcer>>> = OnceLock::new();
    // Keyed as the hubs are. A sender whose task has ended (its runtime was dropped, as at the
    // end of a test) is replaced.
    let key = std::ptr::from_ref(pool.options()) as usize;
    let mut announcers = ANNOUNCERS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    announcers.retain(|_, sender| !sender.is_closed());
    let sender = announcers.entry(key).or_insert_with(|| {
        let (sender, pending) = mpsc::unbounded_channel();
        tokio::spawn(send_announced(pool.clone(), pending));
        sender
    });
    // The task holds the receiver for as long as the runtime runs.
    let _ = sender.send((channel, payload));
}

/// The announcer of one pool: sends what was announced, a batch per transaction.
async fn send_announced(pool: PgPool, mut pending: mpsc::UnboundedReceiver<(&'static str, String)>) {
    let mut batch = Vec::with_capacity(BATCH);
    while pending.recv_many(&mut batch, BATCH).await > 0 {
        batch.sort_unstable();
        batch.dedup();
        let (channels, payloads): (Vec<&str>, Vec<String>) = batch.drain(..).unzip();
        let sent = async {
            let mut tx = super::begin(&pool).await?;
            sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
            sqlx::query("SELECT count(pg_notify(n.channel, n.payload)) FROM unnest($1::text[], $2::text[]) AS n(channel, payload)")
                .bind(&channels)
                .bind(&payloads)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        if let Err(err) = sent.await {
            tracing::warn!(count = channels.len(), "notifications: could not announce: {err}");
        }
    }
}
