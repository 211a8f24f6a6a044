//! The catalog's pages: the model list and detail pages, the comparison picker, the comparison
//! pages (`/compare/{a}-vs-{b}[/{use_case}]`, editorial where the catalog has content, built
//! from the catalog facts otherwise), the sitemap and robots.txt. Everything is read from the
//! in-memory catalog snapshot; only showcase images not generated yet touch the database.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use super::{
    Catalog, Faq, Mode, Model, UseCase,
    showcase::{Showcase, ShowcaseImage},
};
use crate::{
    state::AppState,
    web::{AppError, Result, layout::Layout, render},
};

/// The most models the picker compares at once.
pub const MAX_COMPARE: usize = 4;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/models", get(models_page))
        .route("/models/{slug}", get(model_page))
        .route("/compare", get(picker))
        .route("/compare/{pair}", get(pair_page))
        .route("/compare/{pair}/{use_case}", get(pair_use_case_page))
        .route("/sitemap.xml", get(sitemap))
        .route("/robots.txt", get(robots))
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// What search engines and link previews read: title, description, canonical URL, preview
/// image and structured data.
pub struct Seo {
    pub title: String,
    pub description: String,
    /// Absolute.
    pub canonical: String,
    /// Absolute URL of a preview image.
    pub image: Option<String>,
    pub og_type: &'static str,
    /// JSON-LD, already escaped for a `<script>` element.
    pub json_ld: Option<String>,
}

/// Serialises JSON-LD so it can sit inside `<script type="application/ld+json">`: `<`, `>` and
/// `&` become `\u003c`, `\u003e`, `\u0026` (still the same JSON), so no text can close the
/// element.
pub fn json_ld(value: &serde_json::Value) -> String {
    value.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

fn breadcrumbs_ld(base: &str, crumbs: &[(String, String)]) -> serde_json::Value {
    json!({
        "@type": "BreadcrumbList",
        "itemListElement": crumbs.iter().enumerate().map(|(i, (name, href))| json!({
            "@type": "ListItem",
            "position": i + 1,
            "name": name,
            "item": format!("{base}{href}"),
        })).collect::<Vec<_>>(),
    })
}

fn faq_ld(faq: &[Faq]) -> serde_json::Value {
    json!({
        "@type": "FAQPage",
        "mainEntity": faq.iter().map(|f| json!({
            "@type": "Question",
            "name": f.question,
            "acceptedAnswer": { "@type": "Answer", "text": f.answer },
        })).collect::<Vec<_>>(),
    })
}

fn graph(items: Vec<serde_json::Value>) -> String {
    json_ld(&json!({ "@context": "https://schema.org", "@graph": items }))
}

/// Shortens text to at most `max` characters at a word boundary (meta descriptions).
fn summary(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    for word in text.split_whitespace() {
        if out.chars().count() + word.chars().count() + 2 > max {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.trim_end_matches([',', ';', ':', '.']).to_string() + "…"
}

fn credits(n: i64) -> String {
    if n == 1 { "1 credit".into() } else { format!("{n} credits") }
}

/// The side-by-side feature table (rows exactly as on the seed comparison).
pub struct FeatureTable {
    /// (slug, name) per column.
    pub models: Vec<(String, String)>,
    pub rows: Vec<FeatureRow>,
}

pub struct FeatureRow {
    pub label: &'static str,
    pub values: Vec<String>,
}

pub fn feature_table(models: &[&Model]) -> FeatureTable {
    let yes_no = |b: bool| if b { "Yes".to_string() } else { "No".to_string() };
    let row = |label: &'static str, f: &dyn Fn(&Model) -> String| FeatureRow {
        label,
        values: models.iter().map(|m| f(m)).collect(),
    };
    FeatureTable {
        models: models.iter().map(|m| (m.slug.clone(), m.name.clone())).collect(),
        rows: vec![
            row("Provider", &|m| m.provider_name.clone()),
            row("Subcategories", &|m| m.subcategories.join(", ")),
            row("1080p / 2k Mode", &|m| yes_no(m.offers(Mode::TwoK))),
            row("4k Mode", &|m| yes_no(m.offers(Mode::FourK))),
            row("NSFW Rating", &|m| m.nsfw_rating.clone()),
            row("Aspect Ratio", &|m| m.aspect_ratios.join(", ")),
            row("Model Variant", &|m| {
                if m.variants.len() > 1 {
                    m.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
                } else {
                    "—".to_string()
                }
            }),
            row("Starting Price", &|m| m.starting_price().map(credits).unwrap_or_else(|| "—".into())),
        ],
    }
}

/// A link with its label.
pub struct Link {
    pub href: String,
    pub label: String,
}

fn pair_path(a: &str, b: &str, use_case: Option<&str>) -> String {
    match use_case {
        Some(u) => format!("/compare/{a}-vs-{b}/{u}"),
        None => format!("/compare/{a}-vs-{b}"),
    }
}

/// Every comparison page we publish: each pair in canonical order, generally and per use case.
pub fn comparison_paths(catalog: &Catalog) -> Vec<String> {
    let mut paths = Vec::new();
    for (a, b) in catalog.pairs() {
        paths.push(pair_path(&a.slug, &b.slug, None));
        for u in catalog.use_cases() {
            paths.push(pair_path(&a.slug, &b.slug, Some(&u.slug)));
        }
    }
    paths
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
}

#[derive(askama::Template)]
#[template(path = "catalog/models.html")]
struct ModelsPage {
    layout: Layout,
    seo: Seo,
    cards: Vec<ModelCard>,
    use_cases: Vec<UseCase>,
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
        })
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
        og_type: "website",
        json_ld: Some(graph(vec![breadcrumbs_ld(&base, &crumbs), list])),
    };
    Ok(render(&ModelsPage { layout, seo, cards, use_cases: catalog.use_cases().to_vec() }))
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
    comparisons: Vec<(Link, Vec<Link>)>,
    studio_href: String,
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
    let comparisons = catalog
        .models()
        .iter()
        .filter(|other| other.slug != model.slug)
        .filter_map(|other| {
            let (a, b) = canonical(&catalog, &model.slug, &other.slug)?;
            let main = Link { href: pair_path(a, b, None), label: format!("{} vs {}", model.name, other.name) };
            let per_use_case = catalog
                .use_cases()
                .iter()
                .map(|u| Link { href: pair_path(a, b, Some(&u.slug)), label: u.name.clone() })
                .collect();
            Some((main, per_use_case))
        })
        .collect();
    let crumbs = vec![
        ("Home".to_string(), "/".to_string()),
        ("Models".to_string(), "/models".to_string()),
        (model.name.clone(), format!("/models/{}", model.slug)),
    ];
    let price_text = model.starting_price().map(|p| format!(" from {}", credits(p))).unwrap_or_default();
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
        og_type: "website",
        json_ld: Some(graph(vec![breadcrumbs_ld(&base, &crumbs)])),
    };
    let studio_href = format!("/studio?models={}", model.slug);
    Ok(render(&ModelPage {
        layout,
        seo,
        modes: all_modes.iter().map(|m| m.label()).collect(),
        prices,
        comparisons,
        studio_href,
        model,
    }))
}

/// The pair in canonical (display) order, or `None` if either is unknown or they are equal.
fn canonical<'a>(catalog: &Catalog, x: &'a str, y: &'a str) -> Option<(&'a str, &'a str)> {
    let (px, py) = (catalog.position(x)?, catalog.position(y)?);
    match px.cmp(&py) {
        std::cmp::Ordering::Less => Some((x, y)),
        std::cmp::Ordering::Greater => Some((y, x)),
        std::cmp::Ordering::Equal => None,
    }
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

/// The `models` query parameter, as `?models=a,b,c` and/or repeated `models=a&models=b`:
/// trimmed, empties dropped, duplicates removed, order kept. `None` when absent.
pub fn selected_models(query: Option<&str>) -> Option<Vec<String>> {
    let query = query?;
    let mut present = false;
    let mut out: Vec<String> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "models" {
            continue;
        }
        present = true;
        for slug in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !out.iter().any(|s| s == slug) {
                out.push(slug.to_string());
            }
        }
    }
    present.then_some(out)
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

struct ShowcaseItem {
    model_name: String,
    image: Showcase,
}

struct ShowcaseBlock {
    use_case_name: String,
    prompt: String,
    items: Vec<ShowcaseItem>,
    sandbox: bool,
    /// Set on a pair's general page: the use case page the images come from.
    from_use_case: Option<Link>,
}

struct Strengths {
    model_name: String,
    model_slug: String,
    points: Vec<String>,
}

#[derive(askama::Template)]
#[template(path = "catalog/comparison.html")]
struct ComparisonPage {
    layout: Layout,
    seo: Seo,
    breadcrumbs: Vec<Link>,
    a: Model,
    b: Model,
    eyebrow: String,
    title: String,
    intro: String,
    subcategories: Vec<String>,
    showcase: Option<ShowcaseBlock>,
    table: FeatureTable,
    strengths: Vec<Strengths>,
    verdict: String,
    faq: Vec<Faq>,
    editorial: bool,
    cta_href: String,
    cta_label: &'static str,
    use_case_links: Vec<Link>,
    related: Vec<Link>,
}

fn permanent_redirect(location: &str) -> Response {
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

async fn pair_page(State(state): State<AppState>, layout: Layout, Path(pair): Path<String>) -> Result<Response> {
    comparison(state, layout, pair, None).await
}

async fn pair_use_case_page(
    State(state): State<AppState>,
    layout: Layout,
    Path((pair, use_case)): Path<(String, String)>,
) -> Result<Response> {
    comparison(state, layout, pair, Some(use_case)).await
}

async fn comparison(state: AppState, layout: Layout, pair: String, use_case: Option<String>) -> Result<Response> {
    let catalog: Arc<Catalog> = state.catalog.current();
    let (x, y) = pair.split_once("-vs-").ok_or_else(|| {
        AppError::NotFound("a comparison address looks like /compare/flux-2-vs-flux-ultra-1-1".into())
    })?;
    for slug in [x, y] {
        if catalog.model(slug).is_none() {
            return Err(AppError::NotFound(format!("there is no model called “{slug}” in our catalog")));
        }
    }
    let (a, b) =
        canonical(&catalog, x, y).ok_or_else(|| AppError::NotFound("a model cannot be compared with itself".into()))?;
    let use_case = match &use_case {
        Some(slug) => Some(
            catalog
                .use_case(slug)
                .ok_or_else(|| AppError::NotFound(format!("we have no comparisons for the use case “{slug}”")))?
                .clone(),
        ),
        None => None,
    };
    if (a, b) != (x, y) {
        return Ok(permanent_redirect(&pair_path(a, b, use_case.as_ref().map(|u| u.slug.as_str()))));
    }
    let (ma, mb) = match (catalog.model(a), catalog.model(b)) {
        (Some(ma), Some(mb)) => (ma.clone(), mb.clone()),
        _ => return Err(AppError::not_found()),
    };
    let base = layout.public_url.clone();
    let path = pair_path(a, b, use_case.as_ref().map(|u| u.slug.as_str()));
    let editorial = catalog.comparison(a, b, use_case.as_ref().map(|u| u.slug.as_str())).cloned();

    // Showcase: the use case's images, or on a general page those of the first use case.
    let showcase_use_case = use_case.clone().or_else(|| catalog.use_cases().first().cloned());
    let showcase = match &showcase_use_case {
        Some(uc) => {
            let images = state.showcases.images(uc, &[&ma, &mb]).await;
            let sandbox = images.iter().filter_map(Showcase::image).any(ShowcaseImage::is_sandbox);
            Some(ShowcaseBlock {
                use_case_name: uc.name.clone(),
                prompt: uc.showcase_prompt.clone(),
                items: [&ma, &mb]
                    .iter()
                    .zip(images)
                    .map(|(m, image)| ShowcaseItem { model_name: m.name.clone(), image })
                    .collect(),
                sandbox,
                from_use_case: use_case.is_none().then(|| Link {
                    href: pair_path(a, b, Some(&uc.slug)),
                    label: format!("{} vs {} for {}", ma.name, mb.name, uc.name.to_lowercase()),
                }),
            })
        }
        None => None,
    };

    let (title, intro, strengths_a, strengths_b, verdict, faq) = match &editorial {
        Some(c) => (
            c.title.clone(),
            c.intro.clone(),
            c.strengths_a.clone(),
            c.strengths_b.clone(),
            c.verdict.clone(),
            c.faq.clone(),
        ),
        None => (
            match &use_case {
                Some(uc) => format!("{} vs {} for {}", ma.name, mb.name, uc.name.to_lowercase()),
                None => format!("{} vs {}", ma.name, mb.name),
            },
            generic_intro(&ma, &mb, use_case.as_ref()),
            generic_strengths(&ma, &mb),
            generic_strengths(&mb, &ma),
            generic_verdict(&ma, &mb, use_case.as_ref()),
            generic_faq(&ma, &mb, use_case.as_ref()),
        ),
    };
    let table = feature_table(&[&ma, &mb]);

    let mut breadcrumbs = vec![
        Link { href: "/".into(), label: "Home".into() },
        Link { href: "/compare".into(), label: "Compare".into() },
        Link { href: pair_path(a, b, None), label: format!("{} vs {}", ma.name, mb.name) },
    ];
    if let Some(uc) = &use_case {
        breadcrumbs.push(Link { href: path.clone(), label: uc.name.clone() });
    }
    let crumbs: Vec<(String, String)> = breadcrumbs.iter().map(|l| (l.label.clone(), l.href.clone())).collect();
    let image = showcase
        .as_ref()
        .and_then(|s| s.items.iter().find_map(|i| i.image.image()))
        .map(|img| format!("{base}{}", img.url));
    let description = match (&editorial, &use_case) {
        (Some(c), _) => summary(&c.intro, 158),
        (None, Some(uc)) => summary(
            &format!(
                "{} vs {} for {}: the same prompt through both, features, modes and prices ({} vs {}) side by side.",
                ma.name,
                mb.name,
                uc.name.to_lowercase(),
                ma.starting_price().map(credits).unwrap_or_default(),
                mb.starting_price().map(credits).unwrap_or_default()
            ),
            158,
        ),
        (None, None) => summary(
            &format!(
                "{} vs {}: features, resolution modes, aspect ratios, variants and prices ({} vs {}) compared.",
                ma.name,
                mb.name,
                ma.starting_price().map(credits).unwrap_or_default(),
                mb.starting_price().map(credits).unwrap_or_default()
            ),
            158,
        ),
    };
    let seo = Seo {
        title: format!("{title} — Faceoff"),
        description,
        canonical: format!("{base}{path}"),
        image,
        og_type: "article",
        json_ld: Some(graph(vec![faq_ld(&faq), breadcrumbs_ld(&base, &crumbs)])),
    };
    let studio = format!("/studio?models={a},{b}");
    let (cta_href, cta_label) = if layout.is_signed_in() {
        (studio, "Run both in the studio")
    } else {
        (format!("/signup?next={studio}"), "Try both models free")
    };
    let use_case_links = std::iter::once(Link { href: pair_path(a, b, None), label: "All use cases".into() })
        .chain(catalog.use_cases().iter().map(|u| Link { href: pair_path(a, b, Some(&u.slug)), label: u.name.clone() }))
        .filter(|l| l.href != path)
        .collect();
    let related = catalog
        .pairs()
        .into_iter()
        .filter(|(p, q)| (p.slug == a || p.slug == b || q.slug == a || q.slug == b) && !(p.slug == a && q.slug == b))
        .map(|(p, q)| {
            let slug = use_case.as_ref().map(|u| u.slug.as_str());
            let label = match &use_case {
                Some(uc) => format!("{} vs {} for {}", p.name, q.name, uc.name.to_lowercase()),
                None => format!("{} vs {}", p.name, q.name),
            };
            Link { href: pair_path(&p.slug, &q.slug, slug), label }
        })
        .collect();
    let eyebrow = match &use_case {
        Some(uc) => format!("{} comparison", uc.name),
        None => "Model comparison".to_string(),
    };
    let page = ComparisonPage {
        layout,
        seo,
        breadcrumbs,
        eyebrow,
        title,
        intro,
        subcategories: use_case.as_ref().map(|u| u.subcategories.clone()).unwrap_or_default(),
        showcase,
        table,
        strengths: vec![
            Strengths { model_name: ma.name.clone(), model_slug: ma.slug.clone(), points: strengths_a },
            Strengths { model_name: mb.name.clone(), model_slug: mb.slug.clone(), points: strengths_b },
        ],
        verdict,
        faq,
        editorial: editorial.is_some(),
        cta_href,
        cta_label,
        use_case_links,
        related,
        a: ma,
        b: mb,
    };
    Ok(render(&page))
}

fn list_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {}", init.join(", "), last),
    }
}

fn generic_intro(a: &Model, b: &Model, use_case: Option<&UseCase>) -> String {
    let providers = if a.provider == b.provider {
        format!("two models from {}", a.provider_name)
    } else {
        format!("{} from {} and {} from {}", a.name, a.provider_name, b.name, b.provider_name)
    };
    match use_case {
        Some(uc) => format!(
            "{} and {} are {}. For {} work — {} — this page sets them side by side: the same showcase prompt run \
             through both, what each model accepts, the resolutions and aspect ratios it offers, and what an image \
             costs. {}",
            a.name,
            b.name,
            providers,
            uc.name.to_lowercase(),
            list_and(&uc.subcategories.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>()),
            uc.description
        ),
        None => format!(
            "{} and {} are {}. Here are their facts side by side — inputs, resolution modes, aspect ratios, \
             variants and price per image — so you can tell which one fits before you spend a credit.",
            a.name, b.name, providers
        ),
    }
}

/// What `m` offers that `other` does not, from the catalog facts.
fn generic_strengths(m: &Model, other: &Model) -> Vec<String> {
    let mut points = Vec::new();
    if m.image_to_image && !other.image_to_image {
        points.push(format!("Accepts reference images (image-to-image); {} works from text only.", other.name));
    }
    if m.offers(Mode::FourK) && !other.offers(Mode::FourK) {
        points.push(format!("Offers a 4k mode (up to {} MP); {} stops at 1080p / 2k.", m.max_megapixels, other.name));
    }
    if let (Some(p), Some(q)) = (m.starting_price(), other.starting_price())
        && p < q
    {
        points.push(format!("Cheaper per image: from {} against {}.", credits(p), credits(q)));
    }
    let extra: Vec<String> = m.aspect_ratios.iter().filter(|r| !other.aspect_ratios.contains(r)).cloned().collect();
    if !extra.is_empty() {
        points.push(format!("More frame shapes: {} as well.", extra.join(", ")));
    }
    if m.variants.len() > 1 {
        points.push(format!(
            "{} variants ({}) to trade price against quality.",
            m.variants.len(),
            m.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    if !m.capabilities.is_empty() {
        points.push(format!("{}.", m.capabilities.join(", ")));
    }
    if m.nsfw_rating == "Strict" && other.nsfw_rating != "Strict" {
        points.push("Strict content moderation, for publishing without a manual review step.".into());
    }
    points
}

fn generic_verdict(a: &Model, b: &Model, use_case: Option<&UseCase>) -> String {
    let mut parts = Vec::new();
    match (a.starting_price(), b.starting_price()) {
        (Some(p), Some(q)) if p != q => {
            let (cheap, cp, dear, dp) = if p < q { (a, p, b, q) } else { (b, q, a, p) };
            parts.push(format!(
                "On price, {} wins: {} per image against {} for {}.",
                cheap.name,
                credits(cp),
                credits(dp),
                dear.name
            ));
        }
        (Some(p), Some(_)) => parts.push(format!("Both start at {} per image.", credits(p))),
        _ => {}
    }
    for (m, other) in [(a, b), (b, a)] {
        let mut reasons = Vec::new();
        if m.image_to_image && !other.image_to_image {
            reasons.push("start from a reference image".to_string());
        }
        if m.offers(Mode::FourK) && !other.offers(Mode::FourK) {
            reasons.push("need 4k output".to_string());
        }
        if !reasons.is_empty() {
            parts.push(format!("Pick {} if you {}.", m.name, reasons.join(" or ")));
        }
    }
    parts.push(match use_case {
        Some(uc) => format!(
            "For {} the deciding factor is how each renders your own subject: run one prompt through both and compare.",
            uc.name.to_lowercase()
        ),
        None => "The best test is your own prompt: run it through both and compare the results side by side.".into(),
    });
    parts.join(" ")
}

fn generic_faq(a: &Model, b: &Model, use_case: Option<&UseCase>) -> Vec<Faq> {
    let mut faq = Vec::new();
    if let (Some(p), Some(q)) = (a.starting_price(), b.starting_price()) {
        faq.push(Faq {
            question: format!("How much does it cost to compare {} and {}?", a.name, b.name),
            answer: format!(
                "One prompt through both costs {} in the 1080p / 2k mode ({}: {}, {}: {}). Failed or blocked images \
                 are never charged, and new accounts start with free credits.",
                credits(p + q),
                a.name,
                credits(p),
                b.name,
                credits(q)
            ),
        });
    }
    let four_k: Vec<String> = [a, b].iter().filter(|m| m.offers(Mode::FourK)).map(|m| m.name.clone()).collect();
    faq.push(Faq {
        question: "Which one can render in 4k?".into(),
        answer: match four_k.len() {
            0 => "Neither: both are offered in the 1080p / 2k mode only.".into(),
            2 => "Both offer a 4k mode of up to 4 megapixels.".into(),
            _ => format!("Only {} offers a 4k mode; the other is offered in 1080p / 2k.", four_k.join("")),
        },
    });
    let i2i: Vec<String> = [a, b].iter().filter(|m| m.image_to_image).map(|m| m.name.clone()).collect();
    faq.push(Faq {
        question: "Can I start from my own reference image?".into(),
        answer: match i2i.len() {
            0 => "No, both generate from text only.".into(),
            2 => "Yes, both accept a reference image (image-to-image).".into(),
            _ => format!("Only {} accepts a reference image; the other generates from text only.", i2i.join("")),
        },
    });
    faq.push(Faq {
        question: "Which aspect ratios do they support?".into(),
        answer: format!("{}: {}. {}: {}.", a.name, a.aspect_ratios.join(", "), b.name, b.aspect_ratios.join(", ")),
    });
    if let Some(uc) = use_case {
        faq.push(Faq {
            question: format!("What prompt did you use for the {} showcase?", uc.name.to_lowercase()),
            answer: format!("“{}” — the same prompt, seed and size for both models.", uc.showcase_prompt),
        });
    }
    faq
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

/// Every public page path listed in the sitemap.
pub fn sitemap_paths(catalog: &Catalog) -> Vec<String> {
    let mut paths = vec!["/".to_string(), "/models".to_string(), "/compare".to_string()];
    paths.extend(catalog.models().iter().map(|m| format!("/models/{}", m.slug)));
    paths.extend(comparison_paths(catalog));
    paths
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_query_accepts_commas_and_repeats() {
        assert_eq!(selected_models(None), None);
        assert_eq!(selected_models(Some("x=1")), None);
        assert_eq!(selected_models(Some("models=a,b,c")), Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(selected_models(Some("models=a&models=b")), Some(vec!["a".into(), "b".into()]));
        assert_eq!(
            selected_models(Some("models=a%2Cb&models=c&models=a&models=")),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(selected_models(Some("models=")), Some(vec![]));
    }

    #[test]
    fn json_ld_cannot_close_its_script_element() {
        let value = json!({ "text": "</script><script>alert(1)</script> & more" });
        let out = json_ld(&value);
        assert!(!out.contains("</script"), "{out}");
        assert!(!out.contains('<') && !out.contains('>') && !out.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(back, value);
    }

    #[test]
    fn the_seed_table_matches_the_design() {
        let catalog = super::super::file::parse(super::super::CATALOG_TOML).expect("catalog");
        let (a, b) = (catalog.model("flux-2").expect("a"), catalog.model("flux-ultra-1-1").expect("b"));
        let table = feature_table(&[a, b]);
        let rows: Vec<(&str, Vec<&str>)> =
            table.rows.iter().map(|r| (r.label, r.values.iter().map(String::as_str).collect())).collect();
        assert_eq!(
            rows,
            vec![
                ("Provider", vec!["Black Forest Labs", "Black Forest Labs"]),
                ("Subcategories", vec!["text-to-image, image-to-image", "text-to-image"]),
                ("1080p / 2k Mode", vec!["Yes", "Yes"]),
                ("4k Mode", vec!["Yes", "No"]),
                ("NSFW Rating", vec!["Low", "Strict"]),
                ("Aspect Ratio", vec!["1:1, 16:9, 9:16, 3:4, 4:3", "1:1, 16:9, 9:16, 3:4, 4:3, 21:9"]),
                ("Model Variant", vec!["Standard, Klein 9B", "—"]),
                ("Starting Price", vec!["22 credits", "16 credits"]),
            ]
        );
    }

    #[test]
    fn summaries_cut_at_words() {
        assert_eq!(summary("short", 10), "short");
        let s = summary("one two three four five six", 12);
        assert!(s.chars().count() <= 12 && s.ends_with('…'), "{s}");
    }
}
