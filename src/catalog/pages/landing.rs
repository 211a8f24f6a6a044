//! What the pages people land on show beyond the facts: the in-page comparison picker (a GET
//! form to `/compare?models=…`, enhanced by `assets/app.js`), the home page's blocks (the field
//! by maker with a showcase image each, comparisons by use case, the boards' leaders), the use
//! case pages (`/use-cases/{slug}`), and a model's work and board positions. Everything comes
//! from the in-memory catalog and showcase cache, plus one query of the boards' newest
//! snapshots; a block with nothing to show is left out.

use axum::{
    extract::{Path, State},
    response::Response,
};
use serde_json::json;

use super::seo::{Seo, breadcrumbs_ld, graph};
use crate::{
    arena::board::{self, Entry},
    catalog::{
        Catalog, Model, UseCase,
        copy::summary,
        links::{Link, MAX_COMPARE, canonical, pair_path},
        showcase::Showcase,
    },
    state::AppState,
    web::{AppError, Layout, Result, render},
};

/// Ranked entries read per board (enough for every model's position).
const BOARD_ROWS: i64 = 100;
/// Leaders shown per use case on the home and use-case pages.
const LEADERS: usize = 3;

// ---------------------------------------------------------------------------------------------
// The picker form

pub struct PickerChoice {
    pub slug: String,
    pub name: String,
    pub provider_name: String,
    pub starting_price: Option<i64>,
    pub checked: bool,
}

/// The "Compare models (select up to 4)" form, with some models ticked.
pub struct PickerForm {
    pub choices: Vec<PickerChoice>,
    pub max: usize,
    pub selected_count: usize,
}

impl PickerForm {
    /// Every offered model (and the selected ones even when retired), the `selected` ticked.
    pub fn new(catalog: &Catalog, selected: &[&str]) -> PickerForm {
        let choices: Vec<PickerChoice> = catalog
            .models()
            .iter()
            .filter(|m| m.is_offered() || selected.contains(&m.slug.as_str()))
            .map(|m| PickerChoice {
                slug: m.slug.clone(),
                name: m.name.clone(),
                provider_name: m.provider_name.clone(),
                starting_price: m.starting_price(),
                checked: selected.contains(&m.slug.as_str()),
            })
            .collect();
        let selected_count = choices.iter().filter(|c| c.checked).count();
        PickerForm { choices, max: MAX_COMPARE, selected_count }
    }
}

// ---------------------------------------------------------------------------------------------
// Board leaders

/// A model's place on a use case's board.
pub struct Standing {
    pub board_name: String,
    pub board_href: String,
    pub rank: i32,
    pub name: String,
    pub model_slug: String,
    pub votes: i64,
}

/// The ranked rows of every use case's board (not `all`, not `demo`), in catalog order. Empty
/// when the arena has no ranked entries yet (or the query fails: the pages still render).
async fn use_case_boards(state: &AppState, catalog: &Catalog) -> Vec<(UseCase, Vec<Entry>)> {
    let tops = match board::ranked_tops(state.read_pool.get(), BOARD_ROWS).await {
        Ok(tops) => tops,
        Err(err) => {
            tracing::warn!("landing pages: board leaders: {err}");
            return Vec::new();
        }
    };
    catalog
        .use_cases()
        .iter()
        .filter_map(|u| {
            let (_, entries) = tops.iter().find(|(b, e)| *b == u.slug && !e.is_empty())?;
            Some((u.clone(), entries.clone()))
        })
        .collect()
}

fn model_of(entry: &Entry) -> &str {
    entry.entry.split(':').next().unwrap_or(&entry.entry)
}

fn standing(u: &UseCase, e: &Entry) -> Standing {
    Standing {
        board_name: u.name.clone(),
        board_href: format!("/leaderboard/{}", u.slug),
        rank: e.rank.unwrap_or(0),
        name: e.name.clone(),
        model_slug: model_of(e).to_string(),
        votes: e.votes,
    }
}

// ---------------------------------------------------------------------------------------------
// Home page blocks

pub struct FieldModel {
    pub slug: String,
    pub name: String,
    pub image: Showcase,
    pub retired: bool,
}

pub struct Maker {
    pub name: String,
    pub models: Vec<FieldModel>,
}

pub struct UseCaseGroup {
    pub name: String,
    pub href: String,
    pub links: Vec<Link>,
}

pub struct BoardLeaders {
    pub name: String,
    pub href: String,
    pub leaders: Vec<Standing>,
}

/// The home page's data blocks; each is empty when there is nothing to show.
pub struct HomeBlocks {
    /// The use case whose showcase image stands for each model.
    pub showcase_use_case: String,
    pub makers: Vec<Maker>,
    pub by_use_case: Vec<UseCaseGroup>,
    pub leaders: Vec<BoardLeaders>,
}

pub async fn home_blocks(state: &AppState) -> HomeBlocks {
    let catalog = state.catalog.current();
    let mut makers = Vec::new();
    let first = catalog.use_cases().first();
    let all: Vec<&Model> = catalog.models().iter().collect();
    let images = match first {
        Some(u) => state.showcases.images(u, &all).await,
        None => Vec::new(),
    };
    for p in catalog.providers() {
        let models: Vec<FieldModel> = all
            .iter()
            .zip(images.iter().map(Some).chain(std::iter::repeat(None)))
            .filter(|(m, _)| m.provider == p.slug)
            .map(|(m, image)| FieldModel {
                slug: m.slug.clone(),
                name: m.name.clone(),
                image: image.cloned().unwrap_or(Showcase::Pending),
                retired: !m.is_offered(),
            })
            .collect();
        if !models.is_empty() {
            makers.push(Maker { name: p.name.clone(), models });
        }
    }
    if first.is_none() {
        makers.clear();
    }
    let by_use_case = catalog
        .use_cases()
        .iter()
        .filter_map(|u| {
            let links = pairs_worth_reading(&catalog, u, 4);
            (!links.is_empty()).then(|| UseCaseGroup {
                name: u.name.clone(),
                href: format!("/use-cases/{}", u.slug),
                links,
            })
        })
        .collect();
    let leaders = use_case_boards(state, &catalog)
        .await
        .into_iter()
        .map(|(u, entries)| BoardLeaders {
            name: u.name.clone(),
            href: format!("/leaderboard/{}", u.slug),
            leaders: entries.iter().take(LEADERS).map(|e| standing(&u, e)).collect(),
        })
        .collect();
    HomeBlocks { showcase_use_case: first.map(|u| u.name.clone()).unwrap_or_default(), makers, by_use_case, leaders }
}

/// The editorial comparisons of a use case, then (up to `limit`) pairs of models its editorial
/// comparisons name, across makers.
fn pairs_worth_reading(catalog: &Catalog, u: &UseCase, limit: usize) -> Vec<Link> {
    catalog
        .comparisons()
        .iter()
        .filter(|c| c.use_case.as_deref() == Some(u.slug.as_str()))
        .take(limit)
        .map(|c| Link { href: pair_path(&c.model_a, &c.model_b, Some(&u.slug)), label: c.title.clone() })
        .collect()
}

/// The models the editorial comparisons of a use case name, in catalog order.
fn editorial_picks<'a>(catalog: &'a Catalog, u: &UseCase) -> Vec<&'a Model> {
    catalog
        .models()
        .iter()
        .filter(|m| m.is_offered())
        .filter(|m| {
            catalog
                .comparisons()
                .iter()
                .any(|c| c.use_case.as_deref() == Some(u.slug.as_str()) && (c.model_a == m.slug || c.model_b == m.slug))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A model's work (the model page)

pub struct WorkItem {
    pub use_case_name: String,
    pub use_case_href: String,
    pub image: Showcase,
}

pub struct MakerComparisons {
    pub maker: String,
    pub comparisons: Vec<(Link, Vec<Link>)>,
}

/// What the model page shows beyond the facts.
pub struct ModelWork {
    pub work: Vec<WorkItem>,
    pub by_maker: Vec<MakerComparisons>,
    pub standings: Vec<Standing>,
    pub picker: PickerForm,
    /// Recent published images of the model: (share page, thumbnail, prompt, sandbox).
    pub published: Vec<(String, crate::sharing::Thumb, String)>,
}

pub async fn model_work(state: &AppState, model: &Model) -> ModelWork {
    let catalog = state.catalog.current();
    let mut work = Vec::new();
    for u in catalog.use_cases() {
        let image = state.showcases.images(u, &[model]).await.into_iter().next().unwrap_or(Showcase::Pending);
        work.push(WorkItem { use_case_name: u.name.clone(), use_case_href: format!("/use-cases/{}", u.slug), image });
    }
    let mut by_maker: Vec<MakerComparisons> = Vec::new();
    for p in catalog.providers() {
        let comparisons: Vec<(Link, Vec<Link>)> = catalog
            .models()
            .iter()
            .filter(|o| o.provider == p.slug && o.slug != model.slug)
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
        if !comparisons.is_empty() {
            by_maker.push(MakerComparisons { maker: p.name.clone(), comparisons });
        }
    }
    let standings = use_case_boards(state, &catalog)
        .await
        .iter()
        .filter_map(|(u, entries)| entries.iter().find(|e| model_of(e) == model.slug).map(|e| standing(u, e)))
        .collect();
    let published = published_images(state, model).await;
    ModelWork { work, by_maker, standings, picker: PickerForm::new(&catalog, &[model.slug.as_str()]), published }
}

/// The model's images in recent published runs (left out when the database cannot be read).
async fn published_images(state: &AppState, model: &Model) -> Vec<(String, crate::sharing::Thumb, String)> {
    let entries = async {
        let rows = crate::sharing::recent(&state.pool, Some(&model.slug), 8).await?;
        crate::sharing::gallery_entries(&state.pool, &rows).await
    }
    .await;
    match entries {
        Ok(entries) => entries
            .into_iter()
            .filter_map(|e| {
                let thumb = e.thumbs.into_iter().find(|t| t.model == model.slug)?;
                Some((e.href, thumb, e.prompt))
            })
            .collect(),
        Err(err) => {
            tracing::warn!("model page: published images: {err}");
            Vec::new()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /use-cases/{slug}

pub struct GridItem {
    pub model_slug: String,
    pub model_name: String,
    pub maker: String,
    pub image: Showcase,
}

#[derive(askama::Template)]
#[template(path = "catalog/use_case.html")]
pub struct UseCasePage {
    layout: Layout,
    seo: Seo,
    use_case: UseCase,
    /// From the board (ranked by votes) when it has ranked entries.
    leaders: Vec<Standing>,
    /// Otherwise the models our editorial comparisons name.
    picks: Vec<Link>,
    pairs: Vec<Link>,
    grid: Vec<GridItem>,
    sandbox: bool,
    others: Vec<Link>,
}

pub async fn use_case_page(
    State(state): State<AppState>,
    layout: Layout,
    Path(slug): Path<String>,
) -> Result<Response> {
    let catalog = state.catalog.current();
    let use_case = catalog
        .use_case(&slug)
        .ok_or_else(|| AppError::NotFound(format!("we have no use case called “{slug}”")))?
        .clone();
    let base = layout.public_url.clone();
    let leaders: Vec<Standing> = use_case_boards(&state, &catalog)
        .await
        .iter()
        .find(|(u, _)| u.slug == use_case.slug)
        .map(|(u, entries)| entries.iter().take(LEADERS + 2).map(|e| standing(u, e)).collect())
        .unwrap_or_default();
    let picks = if leaders.is_empty() {
        editorial_picks(&catalog, &use_case)
            .into_iter()
            .map(|m| Link { href: format!("/models/{}", m.slug), label: m.name.clone() })
            .collect()
    } else {
        Vec::new()
    };
    let pairs = pairs_worth_reading(&catalog, &use_case, 8);
    let models: Vec<&Model> = catalog.models().iter().collect();
    let images = state.showcases.images(&use_case, &models).await;
    let sandbox = images.iter().filter_map(Showcase::image).any(|i| i.is_sandbox());
    let grid = models
        .iter()
        .zip(images)
        .map(|(m, image)| GridItem {
            model_slug: m.slug.clone(),
            model_name: m.name.clone(),
            maker: m.provider_name.clone(),
            image,
        })
        .collect();
    let others = catalog
        .use_cases()
        .iter()
        .filter(|u| u.slug != use_case.slug)
        .map(|u| Link { href: format!("/use-cases/{}", u.slug), label: u.name.clone() })
        .collect();
    let path = format!("/use-cases/{}", use_case.slug);
    let crumbs = vec![("Home".to_string(), "/".to_string()), (use_case.name.clone(), path.clone())];
    let list = json!({
        "@type": "ItemList",
        "name": format!("{} image models", use_case.name),
        "itemListElement": models.iter().enumerate().map(|(i, m)| json!({
            "@type": "ListItem", "position": i + 1, "name": m.name, "url": format!("{base}/models/{}", m.slug),
        })).collect::<Vec<_>>(),
    });
    let seo = Seo {
        title: format!("Best AI image models for {} — Faceoff", use_case.name.to_lowercase()),
        description: summary(
            &format!(
                "{} The same prompt through {} image models side by side, the best models for it and the comparisons worth reading.",
                use_case.description,
                models.len()
            ),
            160,
        ),
        canonical: format!("{base}{path}"),
        image: None,
        image_size: None,
        og_type: "website",
        json_ld: Some(graph(vec![breadcrumbs_ld(&base, &crumbs), list])),
    };
    Ok(render(&UseCasePage { layout, seo, use_case, leaders, picks, pairs, grid, sandbox, others }))
}
