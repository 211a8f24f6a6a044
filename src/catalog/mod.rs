//! The model catalog: providers, models, variants, prices per resolution mode, use cases and
//! editorial comparison content. The reviewed source of truth is `catalog/catalog.toml`
//! ([`file`]: parsing and validation); it is loaded into PostgreSQL at start-up ([`db`]) and
//! served from an in-memory snapshot ([`CatalogHandle`]) that every instance refreshes when
//! a load announces `catalog_changed`. The catalog's pages (model list and detail, the
//! comparison picker and pages, sitemap, robots.txt) live in [`pages`], the words generated
//! from the facts in [`copy`], the pages' addresses in [`links`], and the showcase images of the
//! comparison pages in [`showcase`].

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicU64, Ordering},
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use crate::providers::{Mode, Route};

pub mod copy;
pub mod db;
pub mod file;
pub mod links;
pub mod pages;
pub mod showcase;

/// The catalog file compiled into the binary (the reviewed `catalog/catalog.toml`).
pub const CATALOG_TOML: &str = include_str!("../../catalog/catalog.toml");
/// Where `faceoff catalog load` reads the file by default.
pub const CATALOG_PATH: &str = "catalog/catalog.toml";
/// The channel a load announces itself on; every instance refreshes its snapshot.
pub const CHANNEL: &str = "catalog_changed";

/// An immutable snapshot of the catalog, shared as `Arc<Catalog>`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub(crate) providers: Vec<CatalogProvider>,
    pub(crate) models: Vec<Model>,
    pub(crate) use_cases: Vec<UseCase>,
    pub(crate) comparisons: Vec<Comparison>,
}

impl Catalog {
    pub fn providers(&self) -> &[CatalogProvider] {
        &self.providers
    }

    pub fn provider(&self, slug: &str) -> Option<&CatalogProvider> {
        self.providers.iter().find(|p| p.slug == slug)
    }

    /// All models, in display order (retired ones included: their pages stay).
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The models offered in the studio and the API (not retired), in display order.
    pub fn offered_models(&self) -> impl Iterator<Item = &Model> {
        self.models.iter().filter(|m| m.is_offered())
    }

    /// How many models each maker has in the catalog, in provider order (makers without models
    /// left out).
    pub fn model_count_by_maker(&self) -> Vec<(&CatalogProvider, usize)> {
        self.providers
            .iter()
            .map(|p| (p, self.models.iter().filter(|m| m.provider == p.slug).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn model(&self, slug: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.slug == slug)
    }

    /// The position of a model in display order (the canonical order of comparison pairs).
    pub fn position(&self, slug: &str) -> Option<usize> {
        self.models.iter().position(|m| m.slug == slug)
    }

    pub fn use_cases(&self) -> &[UseCase] {
        &self.use_cases
    }

    pub fn use_case(&self, slug: &str) -> Option<&UseCase> {
        self.use_cases.iter().find(|u| u.slug == slug)
    }

    /// Editorial comparisons, in file order.
    pub fn comparisons(&self) -> &[Comparison] {
        &self.comparisons
    }

    /// The editorial content for the pair `a`, `b` (in canonical order) and a use case
    /// (`None`: the pair's general page).
    pub fn comparison(&self, a: &str, b: &str, use_case: Option<&str>) -> Option<&Comparison> {
        self.comparisons.iter().find(|c| c.model_a == a && c.model_b == b && c.use_case.as_deref() == use_case)
    }

    /// Every pair of models in canonical order (earlier in display order first).
    pub fn pairs(&self) -> Vec<(&Model, &Model)> {
        let mut pairs = Vec::new();
        for (i, a) in self.models.iter().enumerate() {
            for b in &self.models[i + 1..] {
                pairs.push((a, b));
            }
        }
        pairs
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogProvider {
    /// `bfl`
    pub slug: String,
    /// `Black Forest Labs`
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// `flux-2`
    pub slug: String,
    /// `Flux 2`
    pub name: String,
    /// The provider's slug, `bfl`.
    pub provider: String,
    /// `Black Forest Labs`
    pub provider_name: String,
    pub description: String,
    /// `["text-to-image", "image-to-image"]`
    pub subcategories: Vec<String>,
    /// e.g. `["LoRA support", "Face swap", "Style transfer"]`
    pub capabilities: Vec<String>,
    /// Accepts a reference image.
    pub image_to_image: bool,
    pub max_megapixels: f32,
    /// `Low`, `Strict`, …
    pub nsfw_rating: String,
    /// `["1:1", "16:9", …]`
    pub aspect_ratios: Vec<String>,
    /// At least one; exactly one `is_default`.
    pub variants: Vec<Variant>,
    /// Whether the model is offered: a retired model keeps its pages (with a notice and its
    /// successor) but leaves the studio and the API's model list.
    pub lifecycle: Lifecycle,
    /// What the notice says (e.g. the maker's shutdown date).
    pub lifecycle_note: Option<String>,
    /// The model to use instead (a slug of this catalog), for retiring and retired models.
    pub successor: Option<String>,
    /// `Some`: the maker bills by usage (tokens). The catalog price is the most a job can cost
    /// (the hold); the charge is the provider's reported cost in credits times this markup,
    /// capped by the hold. Pages say "up to N credits".
    pub usage_markup: Option<f32>,
    /// How the prices were set from the maker's list price.
    pub price_note: String,
}

/// A model's place in its maker's lineup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Offered.
    Active,
    /// Offered, but the maker has announced its shutdown.
    Retiring,
    /// Shut down by its maker: pages only, not offered.
    Retired,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Retiring => "retiring",
            Lifecycle::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Lifecycle> {
        match s {
            "active" => Some(Lifecycle::Active),
            "retiring" => Some(Lifecycle::Retiring),
            "retired" => Some(Lifecycle::Retired),
            _ => None,
        }
    }
}

impl Model {
    /// A choice of this model and `variant`.
    pub fn choice(&self, variant: &Variant) -> ModelChoice {
        ModelChoice::new(self, variant)
    }

    pub fn default_variant(&self) -> &Variant {
        // Validation guarantees exactly one default; fall back to the first variant anyway.
        self.variants.iter().find(|v| v.is_default).unwrap_or(&self.variants[0])
    }

    pub fn variant(&self, slug: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.slug == slug)
    }

    /// The modes with a price on the default variant (the modes the model offers), 2k first.
    pub fn modes(&self) -> Vec<Mode> {
        [Mode::TwoK, Mode::FourK].into_iter().filter(|m| self.default_variant().price(*m).is_some()).collect()
    }

    pub fn offers(&self, mode: Mode) -> bool {
        self.modes().contains(&mode)
    }

    /// Credits per image for a variant in a mode; `None` = not offered.
    pub fn price(&self, variant_slug: &str, mode: Mode) -> Option<i64> {
        self.variant(variant_slug)?.price(mode)
    }

    /// The default variant's 2k price.
    pub fn starting_price(&self) -> Option<i64> {
        self.default_variant().price(Mode::TwoK)
    }

    pub fn supports_aspect_ratio(&self, ratio: &str) -> bool {
        self.aspect_ratios.iter().any(|r| r == ratio)
    }

    /// Offered in the studio and the API (not retired).
    pub fn is_offered(&self) -> bool {
        self.lifecycle != Lifecycle::Retired
    }

    /// Billed by usage: the price is a ceiling ("up to N credits").
    pub fn is_usage_billed(&self) -> bool {
        self.usage_markup.is_some()
    }

    /// "22 credits", or "up to 22 credits" for a usage-billed model.
    pub fn price_label(&self, credits: i64) -> String {
        if self.is_usage_billed() { format!("up to {credits} credits") } else { format!("{credits} credits") }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// `standard`, `klein-9b`
    pub slug: String,
    /// `Standard`, `Klein 9B`
    pub name: String,
    /// The maker's endpoint id, `flux-2-pro` (the first route's).
    pub endpoint: String,
    /// Where a job of this variant can run, in order of preference: the maker's own API first,
    /// then hosts such as fal or Replicate. A job takes the first configured route and falls
    /// through to the next on a retryable failure; with none configured, the sandbox runs it.
    pub routes: Vec<Route>,
    pub is_default: bool,
    /// Credits per image, 2k first.
    pub prices: Vec<(Mode, i64)>,
}

impl Variant {
    pub fn price(&self, mode: Mode) -> Option<i64> {
        self.prices.iter().find(|(m, _)| *m == mode).map(|(_, p)| *p)
    }
}

/// One model choice, a model and one of its variants, named the same way everywhere: the studio,
/// the run pages, ledger memos and the API. The default variant goes by the model's name alone
/// ("Flux 2", `flux-2`); the others add theirs ("Flux 2 (Klein 9B)", `flux-2:klein-9b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    pub model_slug: String,
    pub model_name: String,
    pub variant_slug: String,
    pub variant_name: String,
    /// The model's default variant (the catalog's flag, recorded with each job).
    pub is_default: bool,
}

impl ModelChoice {
    pub fn new(model: &Model, variant: &Variant) -> Self {
        ModelChoice {
            model_slug: model.slug.clone(),
            model_name: model.name.clone(),
            variant_slug: variant.slug.clone(),
            variant_name: variant.name.clone(),
            is_default: variant.is_default,
        }
    }

    /// `flux-2` for the default variant, `flux-2:klein-9b` otherwise (what the studio form and
    /// the API accept).
    pub fn value(&self) -> String {
        if self.is_default { self.model_slug.clone() } else { format!("{}:{}", self.model_slug, self.variant_slug) }
    }

    /// "Flux 2" for the default variant, "Flux 2 (Klein 9B)" otherwise.
    pub fn label(&self) -> String {
        if self.is_default { self.model_name.clone() } else { format!("{} ({})", self.model_name, self.variant_name) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UseCase {
    /// `portrait`
    pub slug: String,
    /// `Portrait`
    pub name: String,
    /// `["Close-up headshots", "Environmental portraits"]`
    pub subcategories: Vec<String>,
    pub description: String,
    /// The prompt every model's showcase image for this use case is generated from.
    pub showcase_prompt: String,
    /// The aspect ratio of the showcase images (models that lack it use their first ratio).
    pub showcase_aspect_ratio: String,
}

/// Editorial content of one comparison page.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The pair, in canonical order.
    pub model_a: String,
    pub model_b: String,
    /// `None`: the pair's general page.
    pub use_case: Option<String>,
    pub title: String,
    pub intro: String,
    pub strengths_a: Vec<String>,
    pub strengths_b: Vec<String>,
    pub verdict: String,
    pub faq: Vec<Faq>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Faq {
    pub question: String,
    pub answer: String,
}

/// Shared, refreshable handle to the current catalog snapshot (held in the application state).
#[derive(Clone, Default)]
pub struct CatalogHandle {
    inner: Arc<RwLock<Arc<Catalog>>>,
    /// Bumped by every [`CatalogHandle::replace`]: what was derived from an older snapshot
    /// (cached pages) is stale.
    version: Arc<AtomicU64>,
}

impl CatalogHandle {
    /// Reads the catalog from the database.
    pub async fn load(pool: &PgPool) -> anyhow::Result<CatalogHandle> {
        let catalog = db::fetch(pool).await?;
        Ok(CatalogHandle::from_catalog(catalog))
    }

    pub fn from_catalog(catalog: Catalog) -> CatalogHandle {
        CatalogHandle { inner: Arc::new(RwLock::new(Arc::new(catalog))), version: Arc::default() }
    }

    /// The current snapshot: cheap, never touches the database.
    pub fn current(&self) -> Arc<Catalog> {
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The snapshot's version: read it before [`CatalogHandle::current`] to label what is
    /// derived from the snapshot (a replacement in between only makes the label older).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Replaces the snapshot.
    pub fn replace(&self, catalog: Catalog) {
        let catalog = Arc::new(catalog);
        match self.inner.write() {
            Ok(mut guard) => *guard = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Re-reads the catalog from the database.
    pub async fn refresh(&self, pool: &PgPool) -> anyhow::Result<()> {
        let catalog = db::fetch(pool).await?;
        self.replace(catalog);
        Ok(())
    }

    /// Keeps the snapshot current: listens for `catalog_changed` and refreshes on each
    /// notification (and after every reconnect, in case one was missed) until `shutdown`.
    pub fn spawn_listener(&self, pool: PgPool, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            // After every (re)connection too: a load announced while disconnected was missed.
            crate::db::listen(&pool, CHANNEL, "catalog listener", &shutdown, |notification| {
                let (handle, pool) = (&handle, &pool);
                async move {
                    match handle.refresh(pool).await {
                        Ok(()) if notification.is_some() => tracing::info!("catalog refreshed"),
                        Ok(()) => {}
                        Err(err) => tracing::warn!("catalog refresh: {err}"),
                    }
                }
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_choice_is_named_from_the_default_flag() {
        let catalog = file::parse(CATALOG_TOML).expect("catalog");
        let flux = catalog.model("flux-2").expect("flux-2");
        let standard = flux.choice(flux.default_variant());
        assert_eq!((standard.value().as_str(), standard.label().as_str()), ("flux-2", "Flux 2"));
        let klein = flux.choice(flux.variant("klein-9b").expect("klein"));
        assert_eq!((klein.value().as_str(), klein.label().as_str()), ("flux-2:klein-9b", "Flux 2 (Klein 9B)"));
    }
}
