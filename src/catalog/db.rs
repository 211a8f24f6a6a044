//! The catalog's tables: loading a validated catalog file into them (idempotent, one
//! transaction, announced on `catalog_changed`) and reading the current catalog back.

use anyhow::Context;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, types::Json};

use super::{
    CHANNEL, Catalog, CatalogProvider, Comparison, Faq, Lifecycle, Mode, Model, Route, UseCase, Variant, file,
};

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    /// The database already holds exactly this file.
    Unchanged,
    /// The catalog tables were updated and other instances were told.
    Loaded,
}

/// Validates `text` (the catalog file) and loads it into the database. Loading the same file
/// again changes nothing. Models, variants and the rest that disappeared from the file are
/// retired (they stay in the database for the runs that refer to them).
pub async fn load(pool: &PgPool, text: &str, source: &str) -> anyhow::Result<LoadOutcome> {
    let catalog = file::parse(text)?;
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let mut tx = crate::db::begin(pool).await?;
    // Instances starting together load one after the other.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('faceoff.catalog.load'))").execute(&mut *tx).await?;
    let latest: Option<String> =
        sqlx::query_scalar("SELECT content_hash FROM catalog_revision ORDER BY catalog_revision_id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    if latest.as_deref() == Some(hash.as_str()) {
        return Ok(LoadOutcome::Unchanged);
    }
    write(&mut tx, &catalog).await.context("writing the catalog")?;
    sqlx::query("INSERT INTO catalog_revision (content_hash, source) VALUES ($1, $2)")
        .bind(&hash)
        .bind(source)
        .execute(&mut *tx)
        .await?;
    // Delivered at commit, to every instance (including this one).
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&hash).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(models = catalog.models().len(), source, "catalog loaded");
    Ok(LoadOutcome::Loaded)
}

#[tracing::instrument(skip_all)]
async fn write(conn: &mut PgConnection, catalog: &Catalog) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE catalog_provider SET active = false WHERE active").execute(&mut *conn).await?;
    for (i, p) in catalog.providers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO catalog_provider (slug, name, display_order, active) VALUES ($1, $2, $3, true)
             ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name, display_order = EXCLUDED.display_order,
                 active = true",
        )
        .bind(&p.slug)
        .bind(&p.name)
        .bind(i as i32)
        .execute(&mut *conn)
        .await?;
    }

    sqlx::query("UPDATE catalog_model SET active = false WHERE active").execute(&mut *conn).await?;
    sqlx::query("UPDATE model_variant SET active = false WHERE active").execute(&mut *conn).await?;
    sqlx::query("DELETE FROM variant_price").execute(&mut *conn).await?;
    for (i, m) in catalog.models.iter().enumerate() {
        sqlx::query(
            "INSERT INTO catalog_model (slug, name, provider_slug, description, subcategories, capabilities,
                 image_to_image, max_megapixels, nsfw_rating, aspect_ratios, display_order, active, lifecycle,
                 lifecycle_note, successor, usage_markup, price_note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, true, $12, $13, $14, $15, $16)
             ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name, provider_slug = EXCLUDED.provider_slug,
                 description = EXCLUDED.description, subcategories = EXCLUDED.subcategories,
                 capabilities = EXCLUDED.capabilities, image_to_image = EXCLUDED.image_to_image,
                 max_megapixels = EXCLUDED.max_megapixels, nsfw_rating = EXCLUDED.nsfw_rating,
                 aspect_ratios = EXCLUDED.aspect_ratios,
                 display_order = EXCLUDED.display_order, active = true, lifecycle = EXCLUDED.lifecycle,
                 lifecycle_note = EXCLUDED.lifecycle_note, successor = EXCLUDED.successor,
                 usage_markup = EXCLUDED.usage_markup, price_note = EXCLUDED.price_note",
        )
        .bind(&m.slug)
        .bind(&m.name)
        .bind(&m.provider)
        .bind(&m.description)
        .bind(&m.subcategories)
        .bind(&m.capabilities)
        .bind(m.image_to_image)
        .bind(m.max_megapixels)
        .bind(&m.nsfw_rating)
        .bind(&m.aspect_ratios)
        .bind(i as i32)
        .bind(m.lifecycle)
        .bind(&m.lifecycle_note)
        .bind(&m.successor)
        .bind(m.usage_markup)
        .bind(&m.price_note)
        .execute(&mut *conn)
        .await?;
        for (j, v) in m.variants.iter().enumerate() {
            sqlx::query(
                "INSERT INTO model_variant (model_slug, slug, name, endpoint, is_default, display_order, active, routes)
                 VALUES ($1, $2, $3, $4, $5, $6, true, $7)
                 ON CONFLICT (model_slug, slug) DO UPDATE SET name = EXCLUDED.name, endpoint = EXCLUDED.endpoint,
                     is_default = EXCLUDED.is_default, display_order = EXCLUDED.display_order, active = true,
                     routes = EXCLUDED.routes",
            )
            .bind(&m.slug)
            .bind(&v.slug)
            .bind(&v.name)
            .bind(&v.endpoint)
            .bind(v.is_default)
            .bind(j as i32)
            .bind(v.routes.iter().map(Route::to_string).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
            for (mode, credits) in &v.prices {
                sqlx::query(
                    "INSERT INTO variant_price (model_slug, variant_slug, mode, credits) VALUES ($1, $2, $3, $4)",
                )
                .bind(&m.slug)
                .bind(&v.slug)
                .bind(mode)
                .bind(credits)
                .execute(&mut *conn)
                .await?;
            }
        }
    }

    sqlx::query("UPDATE use_case SET active = false WHERE active").execute(&mut *conn).await?;
    for (i, u) in catalog.use_cases.iter().enumerate() {
        sqlx::query(
            "INSERT INTO use_case (slug, name, description, subcategories, showcase_prompt, showcase_aspect_ratio,
                 display_order, active)
             VALUES ($1, $2, $3, $4, $5, $6, $7, true)
             ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description,
                 subcategories = EXCLUDED.subcategories, showcase_prompt = EXCLUDED.showcase_prompt,
                 showcase_aspect_ratio = EXCLUDED.showcase_aspect_ratio, display_order = EXCLUDED.display_order,
                 active = true",
        )
        .bind(&u.slug)
        .bind(&u.name)
        .bind(&u.description)
        .bind(&u.subcategories)
        .bind(&u.showcase_prompt)
        .bind(&u.showcase_aspect_ratio)
        .bind(i as i32)
        .execute(&mut *conn)
        .await?;
    }

    sqlx::query("UPDATE comparison_content SET active = false WHERE active").execute(&mut *conn).await?;
    for c in &catalog.comparisons {
        sqlx::query(
            "INSERT INTO comparison_content (model_a, model_b, use_case_slug, title, intro, strengths_a,
                 strengths_b, verdict, faq, active)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, true)
             ON CONFLICT (model_a, model_b, use_case_slug) DO UPDATE SET title = EXCLUDED.title,
                 intro = EXCLUDED.intro, strengths_a = EXCLUDED.strengths_a, strengths_b = EXCLUDED.strengths_b,
                 verdict = EXCLUDED.verdict, faq = EXCLUDED.faq, active = true",
        )
        .bind(&c.model_a)
        .bind(&c.model_b)
        .bind(c.use_case.as_deref().unwrap_or(""))
        .bind(&c.title)
        .bind(&c.intro)
        .bind(&c.strengths_a)
        .bind(&c.strengths_b)
        .bind(&c.verdict)
        .bind(Json(&c.faq))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ProviderRow {
    slug: String,
    name: String,
}

#[derive(sqlx::FromRow)]
struct ModelRow {
    slug: String,
    name: String,
    provider_slug: String,
    provider_name: String,
    description: String,
    subcategories: Vec<String>,
    capabilities: Vec<String>,
    image_to_image: bool,
    max_megapixels: f32,
    nsfw_rating: String,
    aspect_ratios: Vec<String>,
    lifecycle: Lifecycle,
    lifecycle_note: Option<String>,
    successor: Option<String>,
    usage_markup: Option<f32>,
    price_note: String,
}

#[derive(sqlx::FromRow)]
struct VariantRow {
    model_slug: String,
    slug: String,
    name: String,
    endpoint: String,
    is_default: bool,
    routes: Vec<String>,
}

/// `mode` decodes as [`Mode`]: a mode the code does not know is an error, not a skipped price.
#[derive(sqlx::FromRow)]
struct PriceRow {
    model_slug: String,
    variant_slug: String,
    mode: Mode,
    credits: i64,
}

#[derive(sqlx::FromRow)]
struct UseCaseRow {
    slug: String,
    name: String,
    description: String,
    subcategories: Vec<String>,
    showcase_prompt: String,
    showcase_aspect_ratio: String,
}

#[derive(sqlx::FromRow)]
struct ComparisonRow {
    model_a: String,
    model_b: String,
    use_case_slug: String,
    title: String,
    intro: String,
    strengths_a: Vec<String>,
    strengths_b: Vec<String>,
    verdict: String,
    /// A malformed `faq` is a decode error, not an empty list.
    faq: Json<Vec<Faq>>,
}

/// Reads the active catalog (in display order).
#[tracing::instrument(skip_all)]
pub async fn fetch(pool: &PgPool) -> anyhow::Result<Catalog> {
    let mut conn = pool.acquire().await?;
    let providers: Vec<ProviderRow> =
        sqlx::query_as("SELECT slug, name FROM catalog_provider WHERE active ORDER BY display_order, slug")
            .fetch_all(&mut *conn)
            .await?;
    let models: Vec<ModelRow> = sqlx::query_as(
        "SELECT m.slug, m.name, m.provider_slug, p.name AS provider_name, m.description, m.subcategories,
                m.capabilities, m.image_to_image, m.max_megapixels, m.nsfw_rating, m.aspect_ratios, m.lifecycle,
                m.lifecycle_note, m.successor, m.usage_markup, m.price_note
         FROM catalog_model m JOIN catalog_provider p ON p.slug = m.provider_slug
         WHERE m.active ORDER BY m.display_order, m.slug",
    )
    .fetch_all(&mut *conn)
    .await?;
    let variants: Vec<VariantRow> = sqlx::query_as(
        "SELECT model_slug, slug, name, endpoint, is_default, routes FROM model_variant WHERE active
         ORDER BY model_slug, display_order, slug",
    )
    .fetch_all(&mut *conn)
    .await?;
    let prices: Vec<PriceRow> =
        sqlx::query_as("SELECT model_slug, variant_slug, mode, credits FROM variant_price ORDER BY mode")
            .fetch_all(&mut *conn)
            .await?;
    let use_cases: Vec<UseCaseRow> = sqlx::query_as(
        "SELECT slug, name, description, subcategories, showcase_prompt, showcase_aspect_ratio
         FROM use_case WHERE active ORDER BY display_order, slug",
    )
    .fetch_all(&mut *conn)
    .await?;
    let comparisons: Vec<ComparisonRow> = sqlx::query_as(
        "SELECT model_a, model_b, use_case_slug, title, intro, strengths_a, strengths_b, verdict, faq
         FROM comparison_content WHERE active ORDER BY created_at, model_a, model_b, use_case_slug",
    )
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);

    let models: Vec<Model> = models
        .into_iter()
        .map(|m| {
            let variants: Vec<Variant> = variants
                .iter()
                .filter(|v| v.model_slug == m.slug)
                .map(|v| Variant {
                    slug: v.slug.clone(),
                    name: v.name.clone(),
                    endpoint: v.endpoint.clone(),
                    routes: v.routes.iter().filter_map(|r| Route::parse(r)).collect(),
                    is_default: v.is_default,
                    prices: prices
                        .iter()
                        .filter(|p| p.model_slug == m.slug && p.variant_slug == v.slug)
                        .map(|p| (p.mode, p.credits))
                        .collect(),
                })
                .collect();
            Model {
                slug: m.slug,
                name: m.name,
                provider: m.provider_slug,
                provider_name: m.provider_name,
                description: m.description,
                subcategories: m.subcategories,
                capabilities: m.capabilities,
                image_to_image: m.image_to_image,
                max_megapixels: m.max_megapixels,
                nsfw_rating: m.nsfw_rating,
                aspect_ratios: m.aspect_ratios,
                variants,
                lifecycle: m.lifecycle,
                lifecycle_note: m.lifecycle_note,
                successor: m.successor,
                usage_markup: m.usage_markup,
                price_note: m.price_note,
            }
        })
        // A model is usable only with a default variant (the loader guarantees one).
        .filter(|m| m.variants.iter().any(|v| v.is_default))
        .collect();
    let use_cases = use_cases
        .into_iter()
        .map(|u| UseCase {
            slug: u.slug,
            name: u.name,
            subcategories: u.subcategories,
            description: u.description,
            showcase_prompt: u.showcase_prompt,
            showcase_aspect_ratio: u.showcase_aspect_ratio,
        })
        .collect();
    let comparisons = comparisons
        .into_iter()
        .map(|c| Comparison {
            model_a: c.model_a,
            model_b: c.model_b,
            use_case: (!c.use_case_slug.is_empty()).then_some(c.use_case_slug),
            title: c.title,
            intro: c.intro,
            strengths_a: c.strengths_a,
            strengths_b: c.strengths_b,
            verdict: c.verdict,
            faq: c.faq.0,
        })
        .collect();
    Ok(Catalog {
        providers: providers.into_iter().map(|p| CatalogProvider { slug: p.slug, name: p.name }).collect(),
        models,
        use_cases,
        comparisons,
    })
}
