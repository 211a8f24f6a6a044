//! The application state shared by every request handler and background task.

use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    accounts::{
        api_keys::KeyCache,
        rate_limit::{ApiLimits, Throttle, store::LimitStore},
    },
    catalog::{
        CatalogHandle,
        showcase::{ShowcaseDeps, Showcases},
    },
    config::Config,
    db::ReadPool,
    payments::Payments,
    providers::Providers,
    runs::RunEvents,
    storage::Store,
    telemetry::Metrics,
    web::{assets::Assets, csrf::CsrfKey, page_cache::PageCache},
};

/// Cheap to clone: everything inside is reference-counted.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// The primary: every write, and every read of user or ledger data.
    pub pool: PgPool,
    /// Catalog-only reads (a replica with `DATABASE_READ_URL`; see `db::ReadPool`).
    pub read_pool: ReadPool,
    pub config: Arc<Config>,
    pub assets: Arc<Assets>,
    pub metrics: Metrics,
    pub store: Store,
    pub providers: Providers,
    pub payments: Payments,
    /// Sign-up and log-in throttling (failures per email and address, per address, per device),
    /// global across instances.
    pub throttle: Arc<Throttle>,
    /// The JSON API's request rate limits per key and address, global across instances.
    pub api_limits: Arc<ApiLimits>,
    /// API keys found valid recently (used while its revocation listener runs).
    pub api_keys: Arc<KeyCache>,
    /// Signs the device cookies of browsers that signed in (shared by every instance).
    pub device_key: Arc<[u8; 32]>,
    /// Cancelled when the process shuts down: background work stops and live streams end.
    pub shutdown: CancellationToken,
    /// The catalog snapshot pages read (refreshed on `catalog_changed`).
    pub catalog: CatalogHandle,
    /// Fan-out of job notifications to the live run pages.
    pub run_events: RunEvents,
    /// Ready showcase images of the comparison pages (cached) and their generation.
    pub showcases: Showcases,
    /// Signs the CSRF tokens of forms (the same key on every instance: it lives in the database).
    pub csrf_key: CsrfKey,
    /// Public pages as visitors see them, rendered and compressed (see `web::page_cache`).
    pub pages: Arc<PageCache>,
}

impl AppState {
    /// Builds the state over a pool whose database is already migrated and seeded.
    pub async fn new(pool: PgPool, config: Config) -> anyhow::Result<Self> {
        let store = Store::from_url(&config.storage_url)?;
        let providers = Providers::from_config(&config)?;
        let payments = Payments::from_config(&config)?;
        crate::accounts::password::warm_up().await;
        let catalog = CatalogHandle::load(&pool).await?;
        let csrf_key = CsrfKey::new(crate::db::secret_key(&pool, "csrf").await?);
        let device_key = Arc::new(crate::db::secret_key(&pool, "device").await?);
        let limit_store = match &config.redis_url {
            Some(url) => LimitStore::redis(url.expose(), &redis_prefix(&pool)).await?,
            None => LimitStore::postgres(pool.clone()),
        };
        tracing::info!(store = limit_store.kind(), "rate limits are counted globally");
        let throttle = Arc::new(Throttle::with_store(config.throttle, limit_store.clone()));
        let api_limits = Arc::new(ApiLimits::with_store(config.api_rate_limit, limit_store));
        let read_pool = ReadPool::from_config(&config, &pool)?;
        let shutdown = CancellationToken::new();
        let showcases =
            Showcases::new(ShowcaseDeps::new(pool.clone(), store.clone(), providers.clone()), shutdown.clone());
        Ok(AppState {
            pool,
            read_pool,
            config: Arc::new(config),
            assets: Arc::new(Assets::load()?),
            metrics: Metrics::install(),
            store,
            providers,
            payments,
            throttle,
            api_limits,
            api_keys: Arc::default(),
            device_key,
            shutdown,
            catalog,
            run_events: RunEvents::default(),
            showcases,
            csrf_key,
            pages: Arc::default(),
        })
    }
}

/// The prefix of this deployment's Redis keys: `faceoff:{database}:`, so that deployments (and
/// test databases) sharing one Redis never count into each other's limits.
fn redis_prefix(pool: &PgPool) -> String {
    let database = pool.connect_options().get_database().unwrap_or("faceoff").to_string();
    format!("faceoff:{database}:")
}
