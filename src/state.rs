//! The application state shared by every request handler and background task.

use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;

use crate::{
    catalog::{CatalogHandle, showcase::Showcases},
    config::Config,
    providers::Providers,
    storage::Store,
    telemetry::Metrics,
    web::assets::Assets,
};

/// Cheap to clone: everything inside is reference-counted.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub assets: Arc<Assets>,
    pub metrics: Metrics,
    pub store: Store,
    pub providers: Providers,
    /// The catalog snapshot pages read (refreshed on `catalog_changed`).
    pub catalog: CatalogHandle,
    /// Ready showcase images of the comparison pages (cached) and their generation.
    pub showcases: Showcases,
}

impl AppState {
    /// Builds the state over a pool whose database is already migrated and seeded.
    pub async fn new(pool: PgPool, config: Config) -> anyhow::Result<Self> {
        let store = Store::from_url(&config.storage_url)?;
        let providers = Providers::from_config(&config)?;
        let catalog = CatalogHandle::load(&pool).await?;
        Ok(AppState {
            pool,
            config: Arc::new(config),
            assets: Arc::new(Assets::load()?),
            metrics: Metrics::install(),
            store,
            providers,
            catalog,
            showcases: Showcases::default(),
        })
    }
}
