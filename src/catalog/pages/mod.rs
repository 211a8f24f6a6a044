//! The catalog's pages: the model list and detail pages, the comparison picker, the comparison
//! pages ([`comparison`]: `/compare/{a}-vs-{b}[/{use_case}]`, editorial where the catalog has
//! content, built from the catalog facts otherwise), the home page's featured comparisons, the
//! sitemap and robots.txt. Everything is read from the in-memory catalog snapshot; only showcase
//! images not generated yet touch the database.

use axum::{
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use super::{
    Mode, Model, UseCase,
    copy::{FeatureTable, feature_table, summary},
    links::{Link, MAX_COMPARE, canonical, pair_path, selected_models, sitemap_paths},
    showcase::Showcase,
};
use crate::{
    state::AppState,
    web::{
        AppError, Layout, Result, Routes,
        page_cache::{self, Lookup},
        render,
    },
};

pub mod comparison;
pub mod landing;
pub mod seo;

use comparison::{ComparisonPage, LookPage, Resolved};
use seo::{Seo, breadcrumbs_ld, graph};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/models", get(models_page))
        .route("/models/{slug}", get(model_page))
        .route("/compare", get(picker))
        .route("/compare/{pair}", get(pair_page))
        .route("/compare/{pair}/{use_case}", get(pair_use_case_page))
        .route("/use-cases/{use_case}", get(landing::use_case_page))
        .route("/compare/{pair}/{use_case}/look", get(look_page))
        .route("/compare/{pair}/card.png", get(pair_card))
        .route("/compare/{pair}/{use_case}/card.png", get(pair_use_case_card))
        .route("/sitemap.xml", get(sitemap))
        .route("/robots.txt", get(robots))
}

// ---------------------------------------------------------------------------------------------
// /models

struct ModelCard {
    slug: String,
    name: String,
    provider_name: String,
    description: String,
    tags: Vec<String>,
    starting_price: Option<i64>,
    has_4k: bool,
    /// Billed by usage: "up to N credits".
    up_to: bool,
    retired: bool,
}

/// One maker's line in the /models summary.
struct MakerCount {
    name: String,
    models: usize,
}

#[derive(askama::Template)]
#[template(path = "catalog/models.html")]
struct ModelsPage {
    layout: Layout,
    seo: Seo,
    cards: Vec<ModelCard>,
    use_cases: Vec<UseCase>,
    makers: Vec<MakerCount>,
    model_count: usize,
}

async fn models_page(State(state): State<AppState>, layout: Layout) -> Result<Response> {
    let catalog = state.catalog.current();
    let base = layout.public_url.clone();
    let cards = catalog
        .models()
        .iter()
        .map(|m| ModelCard {
            slug: m.slug.clone(),
            name: m.name.clone(),
            provider_name: m.provider_name.clone(),
            description: m.description.clone(),
            tags: m.subcategories.iter().chain(&m.capabilities).cloned().collect(),
            starting_price: m.starting_price(),
            has_4k: m.offers(Mode::FourK),
            up_to: m.is_usage_billed(),
            retired: !m.is_offered(),
        })
        .collect();
    let makers = catalog
        .model_count_by_maker()
        .into_iter()
        .map(|(p, models)| MakerCount { name: p.name.clone(), models })
        .collect();
    let names: Vec<&str> = catalog.models().iter().map(|m| m.name.as_str()).collect();
    let crumbs = vec![("Home".to_string(), "/".to_string()), ("Models".to_string(), "/models".to_string())];
    let list = json!({
        "@type": "ItemList",
        "itemListElement": catalog.models().iter().enumerate().map(|(i, m)| json!({
            "@type": "ListItem", "position": i + 1, "name": m.name, "url": format!("{base}/models/{}", m.slug),
        })).collect::<Vec<_>>(),
    });
    let seo = Seo {
        title: format!("AI image models: {} models, features and prices — Faceoff", catalog.models().len()),
        description: summary(
            &format!(
                "Every image model on Faceoff with its capabilities, resolution modes and price per image: {}.",
                names.join(", ")
            ),
            160,
        ),
        canonical: format!("{base}/models"),
        image: None,
        image_size: None,
        og_type: "website",
        json_ld: Some(graph(vec![breadcrumbs_ld(&base, &crumbs), list])),
    };
    Ok(render(&ModelsPage {
        layout,
        seo,
        cards,
        use_cases: catalog.use_cases().to_vec(),
        makers,
        model_count: catalog.models().len(),
    }))
}

// ---------------------------------------------------------------------------------------------
// /models/{slug}

struct PriceRow {
    variant: String,
    endpoint: String,
    is_default: bool,
    cells: Vec<Option<i64>>,
}

#[derive(askama::Template)]
#[template(path = "catalog/model.html")]
struct ModelPage {
    layout: Layout,
    seo: Seo,
    model: Model,
    modes: Vec<&'static str>,
    prices: Vec<PriceRow>,
    studio_href: String,
    /// The model to use instead (retiring and retired models).
    successor: Option<Link>,
    work: landing::ModelWork,
}

async fn model_page(State(state): State<AppState>, layout: Layout, Path(slug): Path<String>) -> Result<Response> {
    let catalog = state.catalog.current();
    let model = catalog
        .model(&slug)
        .ok_or_else(|| AppError::NotFound(format!("there is no model called “{slug}” in our catalog")))?
        .clone();
    let base = layout.public_url.clone();
    let all_modes = [Mode::TwoK, Mode::FourK];
    let prices = model
        .variants
        .iter()
        .map(|v| PriceRow {
            variant: v.name.clone(),
            endpoint: v.endpoint.clone(),
            is_default: v.is_default,
            cells: all_modes.iter().map(|m| v.price(*m)).collect(),
        })
        .collect();
    let crumbs = vec![
        ("Home".to_string(), "/".to_string()),
        ("Models".to_string(), "/models".to_string()),
        (model.name.clone(), format!("/models/{}", model.slug)),
    ];
    let price_text = model.starting_price().map(|p| format!(" from {}", model.price_label(p))).unwrap_or_default();
    let seo = Seo {
        title: format!("{} by {}: features, variants and prices — Faceoff", model.name, model.provider_name),
        description: summary(
            &format!(
                "{} by {}{} per image: {}. Modes: {}. Aspect ratios: {}.",
                model.name,
                model.provider_name,
                price_text,
                model.subcategories.join(", "),
                model.modes().iter().map(|m| m.label()).collect::<Vec<_>>().join(", "),
                model.aspect_ratios.join(", ")
            ),
            160,
        ),
        canonical: format!("{base}/models/{}", model.slug),
        image: None,
        image_size: None,
        og_type: "website",
        json_ld: Some(graph(vec![breadcrumbs_ld(&base, &crumbs)])),
    };
    let studio_href = format!("/studio?models={}", model.slug);
    let successor = model
        .successor
        .as_deref()
        .and_then(|s| catalog.model(s))
        .map(|s| Link { href: format!("/models/{}", s.slug), label: s.name.clone() });
    let work = landing::model_work(&state, &model).await;
    Ok(render(&ModelPage {
        layout,
        seo,
        successor,
        work,
        modes: all_modes.iter().map(|m| m.label()).collect(),
        prices,
        studio_href,
        model,
    }))
}

// ---------------------------------------------------------------------------------------------
// /compare (picker)

struct PickerChoice {
    slug: String,
    name: String,
    provider_name: String,
    starting_price: Option<i64>,
    checked: bool,
}

#[derive(askama::Template)]
#[template(path = "catalog/compare.html")]
struct PickerPage {
    layout: Layout,
    seo: Seo,
    choices: Vec<PickerChoice>,
    max: usize,
    selected_count: usize,
    error: Option<String>,
    table: Option<FeatureTable>,
    pair_links: Vec<Link>,
    studio_href: String,
    total_2k: i64,
    featured: Vec<Link>,
}

async fn picker(State(state): State<AppState>, layout: Layout, RawQuery(query): RawQuery) -> Result<Response> {
    let catalog = state.catalog.current();
    let base = layout.public_url.clone();
    let selected = selected_models(query.as_deref());
    let chosen = selected.clone().unwrap_or_default();

    let mut status = StatusCode::OK;
    let mut error = None;
    let mut models: Vec<&Model> = Vec::new();
    if let Some(selected) = &selected {
        let unknown: Vec<&str> = selected.iter().filter(|s| catalog.model(s).is_none()).map(String::as_str).collect();
        if !unknown.is_empty() {
            status = StatusCode::NOT_FOUND;
            let list = unknown.iter().map(|s| format!("“{s}”")).collect::<Vec<_>>().join(", ");
            error = Some(if unknown.len() == 1 {
                format!("We don't have a model called {list}. Choose from the list below.")
            } else {
                format!("We don't have models called {list}. Choose from the list below.")
            });
        } else if selected.len() > MAX_COMPARE {
            status = StatusCode::BAD_REQUEST;
            error = Some(format!(
                "You can compare up to {MAX_COMPARE} models at once; you chose {}. Untick {} and compare again.",
                selected.len(),
                selected.len() - MAX_COMPARE
            ));
        } else if selected.len() < 2 {
            status = StatusCode::BAD_REQUEST;
            error = Some(format!(
                "Choose at least two models to compare{}.",
                if selected.len() == 1 { " — you chose one" } else { "" }
            ));
        } else {
            models = selected.iter().filter_map(|s| catalog.model(s)).collect();
        }
    }

    let choices = catalog
        .models()
        .iter()
        .map(|m| PickerChoice {
            slug: m.slug.clone(),
            name: m.name.clone(),
            provider_name: m.provider_name.clone(),
            starting_price: m.starting_price(),
            checked: chosen.contains(&m.slug),
        })
        .collect();
    let mut pair_links = Vec::new();
    for (i, x) in models.iter().enumerate() {
        for y in &models[i + 1..] {
            if let Some((a, b)) = canonical(&catalog, &x.slug, &y.slug) {
                pair_links.push(Link { href: pair_path(a, b, None), label: format!("{} vs {}", x.name, y.name) });
            }
        }
    }
    let featured = catalog
        .comparisons()
        .iter()
        .map(|c| Link { href: pair_path(&c.model_a, &c.model_b, c.use_case.as_deref()), label: c.title.clone() })
        .collect();
    let table = (!models.is_empty()).then(|| feature_table(&models));
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    let seo = if models.is_empty() {
        Seo {
            title: "Compare AI image models side by side — Faceoff".into(),
            description: format!(
                "Pick up to {MAX_COMPARE} image models and see their features, resolution modes, aspect ratios and prices side by side."
            ),
            canonical: format!("{base}/compare"),
            image: None,
            image_size: None,
            og_type: "website",
            json_ld: Some(graph(vec![breadcrumbs_ld(
                &base,
                &[("Home".into(), "/".into()), ("Compare".into(), "/compare".into())],
            )])),
        }
    } else {
        let slugs: Vec<&str> = models.iter().map(|m| m.slug.as_str()).collect();
        Seo {
            title: format!("{} compared — Faceoff", names.join(" vs ")),
            description: summary(
                &format!("{} side by side: provider, modes, aspect ratios, variants and prices.", names.join(", ")),
                160,
            ),
            canonical: format!("{base}/compare?models={}", slugs.join(",")),
            image: None,
            image_size: None,
            og_type: "website",
            json_ld: None,
        }
    };
    let studio_href =
        format!("/studio?models={}", models.iter().map(|m| m.slug.as_str()).collect::<Vec<_>>().join(","));
    let total_2k = models.iter().filter_map(|m| m.starting_price()).sum();
    let page = PickerPage {
        layout,
        seo,
        choices,
        max: MAX_COMPARE,
        selected_count: chosen.len(),
        error,
        table,
        pair_links,
        studio_href,
        total_2k,
        featured,
    };
    Ok((status, render(&page)).into_response())
}

// ---------------------------------------------------------------------------------------------
// /compare/{a}-vs-{b}[/{use_case}]

async fn pair_page(
    State(state): State<AppState>,
    layout: Layout,
    headers: HeaderMap,
    Path(pair): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    comparison_response(&state, layout, &headers, &pair, None, query.as_deref()).await
}

async fn pair_use_case_page(
    State(state): State<AppState>,
    layout: Layout,
    headers: HeaderMap,
    Path((pair, use_case)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    comparison_response(&state, layout, &headers, &pair, Some(&use_case), query.as_deref()).await
}

/// A comparison page; `?cursor=` of the gallery of published runs picks a later page of it.
/// Visitors who are not signed in all see the same first page: it is served from the page cache
/// (`web::page_cache`) once every image on it is ready, until the catalog, the showcase or the
/// public runs change (publishing, unpublishing and hiding a run announce it); one request at a
/// time renders it for the cache. Later gallery pages are rendered per request.
async fn comparison_response(
    state: &AppState,
    layout: Layout,
    headers: &HeaderMap,
    pair: &str,
    use_case: Option<&str>,
    query: Option<&str>,
) -> Result<Response> {
    // The claim (one request at a time) ends when dropped, kept or not.
    let claim = if !layout.is_signed_in() && query.is_none_or(str::is_empty) {
        match state.pages.lookup(&layout.path, state.catalog.version()) {
            Lookup::Hit(page) => return Ok(page.respond(headers, &HeaderValue::from_static(HTML))),
            Lookup::Render(claim) => Some(claim),
            Lookup::RenderUncached => None,
        }
    } else {
        None
    };
    let catalog = state.catalog.current();
    let cursor = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| v.into_owned());
    let after = crate::web::pagination::PageQuery { limit: None, cursor }.position(comparison::gallery_position)?;
    match comparison::resolve(&catalog, pair, use_case)? {
        Resolved::Redirect(location) => Ok(permanent_redirect(&location)),
        Resolved::Page(pair) => {
            let page = ComparisonPage::build(state, layout, *pair, after).await;
            let Some(claim) = claim.filter(|_| page.settled()) else {
                return Ok(render(&page));
            };
            let html = match askama::Template::render(&page) {
                Ok(html) => html,
                Err(_) => return Ok(render(&page)),
            };
            let encoded = std::sync::Arc::new(page_cache::encode(html.into()).await.map_err(AppError::Internal)?);
            claim.put(encoded.clone());
            Ok(encoded.respond(headers, &HeaderValue::from_static(HTML)))
        }
    }
}

const HTML: &str = "text/html; charset=utf-8";

async fn pair_card(State(state): State<AppState>, Path(pair): Path<String>) -> Result<Response> {
    comparison_card(&state, &pair, None).await
}

async fn pair_use_case_card(
    State(state): State<AppState>,
    Path((pair, use_case)): Path<(String, String)>,
) -> Result<Response> {
    comparison_card(&state, &pair, Some(&use_case)).await
}

/// `GET /compare/{pair}[/{use_case}]/card.png`: the comparison's social card, made of the two
/// showcase images (those of the first use case on a pair's general page) once both are ready.
/// Stored under a key derived from the images, so it is rendered once per showcase pair.
async fn comparison_card(state: &AppState, pair: &str, use_case: Option<&str>) -> Result<Response> {
    use sha2::Digest;
    let catalog = state.catalog.current();
    let pair = match comparison::resolve(&catalog, pair, use_case)? {
        Resolved::Redirect(location) => return Ok(permanent_redirect(&format!("{location}/card.png"))),
        Resolved::Page(pair) => pair,
    };
    let uc = pair.use_case.as_ref().or_else(|| catalog.use_cases().first()).ok_or_else(AppError::not_found)?;
    let shown = state.showcases.images(uc, &[&pair.a, &pair.b]).await;
    let not_ready = || AppError::NotFound("this comparison's images are not ready yet".into());
    let mut keys = Vec::new();
    for image in &shown {
        let image = image.image().ok_or_else(not_ready)?;
        keys.push((image.url.trim_start_matches("/media/").to_string(), image.is_sandbox()));
    }
    let digest = sha2::Sha256::digest(keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join("\n"));
    let card_key =
        format!("cards/compare-{}-vs-{}-{}-{}.png", pair.a.slug, pair.b.slug, uc.slug, &hex::encode(digest)[..16]);
    let png = match state.store.get(&card_key).await? {
        Some(png) => png,
        None => {
            let mut tiles = Vec::new();
            for ((key, _), model) in keys.iter().zip([&pair.a, &pair.b]) {
                let bytes = state.store.get(key).await?.ok_or_else(not_ready)?;
                tiles.push(crate::sharing::card::Tile { bytes, label: model.name.clone() });
            }
            let sandbox = keys.iter().any(|(_, sandbox)| *sandbox);
            let png = crate::storage::images::run(move || crate::sharing::card::render(tiles, sandbox)).await??;
            let size = (crate::sharing::card::WIDTH, crate::sharing::card::HEIGHT);
            crate::storage::save(&state.pool, &state.store, &card_key, png.clone(), "image/png", Some(size), None)
                .await?;
            png
        }
    };
    let mut response = png.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    Ok(response)
}

/// `GET /compare/{pair}/{use_case}/look`: the pair's showcase images in the comparison viewer.
async fn look_page(
    State(state): State<AppState>,
    layout: Layout,
    Path((pair, use_case)): Path<(String, String)>,
) -> Result<Response> {
    let catalog = state.catalog.current();
    match comparison::resolve(&catalog, &pair, Some(&use_case))? {
        Resolved::Redirect(location) => Ok(permanent_redirect(&format!("{location}/look"))),
        Resolved::Page(pair) => {
            let page = LookPage::build(&state, layout, *pair).await.ok_or_else(AppError::not_found)?;
            Ok(render(&page))
        }
    }
}

fn permanent_redirect(location: &str) -> Response {
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Featured comparisons (the home page)

/// One featured comparison with its showcase images, for the home page.
pub struct FeaturedComparison {
    pub href: String,
    pub title: String,
    pub use_case: Option<String>,
    /// (model name, image) for each of the two models.
    pub images: Vec<(String, Showcase)>,
}

/// The editorial comparisons that have a use case (the seed comparison first), with their
/// showcase images (generated in the background when missing).
pub async fn featured_comparisons(state: &AppState, limit: usize) -> Vec<FeaturedComparison> {
    let catalog = state.catalog.current();
    let mut out = Vec::new();
    for c in catalog.comparisons().iter().filter(|c| c.use_case.is_some()).take(limit) {
        let (Some(a), Some(b), Some(uc)) = (
            catalog.model(&c.model_a),
            catalog.model(&c.model_b),
            c.use_case.as_deref().and_then(|u| catalog.use_case(u)),
        ) else {
            continue;
        };
        let images = state.showcases.images(uc, &[a, b]).await;
        out.push(FeaturedComparison {
            href: pair_path(&a.slug, &b.slug, Some(&uc.slug)),
            title: c.title.clone(),
            use_case: Some(uc.name.clone()),
            images: [a, b].iter().map(|m| m.name.clone()).zip(images).collect(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// /sitemap.xml, /robots.txt

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

async fn sitemap(State(state): State<AppState>) -> Response {
    let catalog = state.catalog.current();
    let base = state.config.public_url.as_str().trim_end_matches('/').to_string();
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for path in sitemap_paths(&catalog) {
        xml.push_str("  <url><loc>");
        xml.push_str(&xml_escape(&format!("{base}{path}")));
        xml.push_str("</loc></url>\n");
    }
    xml.push_str("</urlset>\n");
    ([(header::CONTENT_TYPE, "application/xml; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], xml)
        .into_response()
}

async fn robots(State(state): State<AppState>) -> Response {
    let base = state.config.public_url.as_str().trim_end_matches('/');
    let body = format!("User-agent: *\nAllow: /\n\nSitemap: {base}/sitemap.xml\n");
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], body)
        .into_response()
}
