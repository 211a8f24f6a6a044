//! The comparison page (`/compare/{a}-vs-{b}[/{use_case}]`, the seed's layout): which pair and
//! use case an address names ([`resolve`]), and the page built from the catalog for them
//! ([`ComparisonPage::build`]): the showcase images, the editorial text where the catalog has
//! some (generated from the facts otherwise), the feature table, SEO and links.

use super::seo::{Seo, breadcrumbs_ld, faq_ld, graph};
use crate::{
    catalog::{
        Catalog, Comparison, Faq, Model, UseCase,
        copy::FeatureTable,
        copy::{credits, feature_table, generic_faq, generic_intro, generic_strengths, generic_verdict, summary},
        links::{Link, canonical, pair_path},
        showcase::{Showcase, ShowcaseImage},
    },
    state::AppState,
    web::{AppError, Layout, Result, viewer::ViewerImage},
};

/// A pair in canonical order, and the use case, if any.
pub struct Pair {
    pub a: Model,
    pub b: Model,
    pub use_case: Option<UseCase>,
}

/// What an address asks for.
pub enum Resolved {
    Page(Box<Pair>),
    /// The same comparison lives at this (canonical) address.
    Redirect(String),
}

/// Reads `/compare/{pair}[/{use_case}]`: both models and the use case must exist, the pair must be
/// two different models; the other order of a pair redirects to the canonical one.
pub fn resolve(catalog: &Catalog, pair: &str, use_case: Option<&str>) -> Result<Resolved> {
    let (x, y) = pair.split_once("-vs-").ok_or_else(|| {
        AppError::NotFound("a comparison address looks like /compare/flux-2-vs-flux-ultra-1-1".into())
    })?;
    for slug in [x, y] {
        if catalog.model(slug).is_none() {
            return Err(AppError::NotFound(format!("there is no model called “{slug}” in our catalog")));
        }
    }
    let (a, b) =
        canonical(catalog, x, y).ok_or_else(|| AppError::NotFound("a model cannot be compared with itself".into()))?;
    let use_case = match use_case {
        Some(slug) => Some(
            catalog
                .use_case(slug)
                .ok_or_else(|| AppError::NotFound(format!("we have no comparisons for the use case “{slug}”")))?
                .clone(),
        ),
        None => None,
    };
    if (a, b) != (x, y) {
        return Ok(Resolved::Redirect(pair_path(a, b, use_case.as_ref().map(|u| u.slug.as_str()))));
    }
    match (catalog.model(a), catalog.model(b)) {
        (Some(a), Some(b)) => Ok(Resolved::Page(Box::new(Pair { a: a.clone(), b: b.clone(), use_case }))),
        _ => Err(AppError::not_found()),
    }
}

pub struct ShowcaseItem {
    pub model_name: String,
    pub image: Showcase,
}

pub struct ShowcaseBlock {
    pub use_case_name: String,
    pub prompt: String,
    pub items: Vec<ShowcaseItem>,
    pub sandbox: bool,
    /// Set on a pair's general page: the use case page the images come from.
    pub from_use_case: Option<Link>,
    /// The images in the comparison viewer (`/compare/{pair}/{use_case}/look`).
    pub look_href: String,
}

impl ShowcaseBlock {
    /// Both images are ready: the page links to the viewer.
    pub fn lookable(&self) -> bool {
        self.items.iter().all(|i| i.image.image().is_some())
    }
}

pub struct Strengths {
    pub model_name: String,
    pub model_slug: String,
    pub points: Vec<String>,
}

/// The words of the page: the catalog's editorial comparison, or copy generated from the facts.
struct Content {
    title: String,
    intro: String,
    strengths_a: Vec<String>,
    strengths_b: Vec<String>,
    verdict: String,
    faq: Vec<Faq>,
}

impl Content {
    fn new(editorial: Option<&Comparison>, a: &Model, b: &Model, use_case: Option<&UseCase>) -> Content {
        match editorial {
            Some(c) => Content {
                title: c.title.clone(),
                intro: c.intro.clone(),
                strengths_a: c.strengths_a.clone(),
                strengths_b: c.strengths_b.clone(),
                verdict: c.verdict.clone(),
                faq: c.faq.clone(),
            },
            None => Content {
                title: match use_case {
                    Some(uc) => format!("{} vs {} for {}", a.name, b.name, uc.name.to_lowercase()),
                    None => format!("{} vs {}", a.name, b.name),
                },
                intro: generic_intro(a, b, use_case),
                strengths_a: generic_strengths(a, b),
                strengths_b: generic_strengths(b, a),
                verdict: generic_verdict(a, b, use_case),
                faq: generic_faq(a, b, use_case),
            },
        }
    }
}

#[derive(askama::Template)]
#[template(path = "catalog/comparison.html")]
pub struct ComparisonPage {
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
    /// Retired models in the pair, in words.
    notices: Vec<String>,
    /// The pair's community result in blind votes on this use case's board, when there are
    /// enough votes: (sentence, board link).
    community: Option<(String, String)>,
    /// "Compare models (select up to 4)", the pair ticked.
    picker: super::landing::PickerForm,
    /// Recent published runs of the pair (for this use case), newest first.
    gallery: Vec<crate::sharing::GalleryEntry>,
    /// The next gallery page's address, when more follow.
    gallery_next: Option<String>,
    /// This is a later gallery page (the page links back to the newest).
    gallery_later: bool,
}

impl ComparisonPage {
    /// Nothing on the page is still being made: every showcase image is ready (a page with a
    /// placeholder changes when the image is done, so it is not cached).
    pub fn settled(&self) -> bool {
        self.showcase.as_ref().is_none_or(|s| s.items.iter().all(|i| i.image.image().is_some()))
    }

    /// The page of the pair `a`, `b` (canonical order) for `use_case` (`None`: all use cases).
    pub async fn build(
        state: &AppState,
        layout: Layout,
        pair: Pair,
        after: Option<(time::OffsetDateTime, String)>,
    ) -> Self {
        let Pair { a, b, use_case } = pair;
        let catalog = state.catalog.current();
        let uc_slug = use_case.as_ref().map(|u| u.slug.as_str());
        let path = pair_path(&a.slug, &b.slug, uc_slug);
        let editorial = catalog.comparison(&a.slug, &b.slug, uc_slug);
        let content = Content::new(editorial, &a, &b, use_case.as_ref());
        let showcase = showcase_block(state, &catalog, &a, &b, use_case.as_ref()).await;

        let mut breadcrumbs = vec![
            Link { href: "/".into(), label: "Home".into() },
            Link { href: "/compare".into(), label: "Compare".into() },
            Link { href: pair_path(&a.slug, &b.slug, None), label: format!("{} vs {}", a.name, b.name) },
        ];
        if let Some(uc) = &use_case {
            breadcrumbs.push(Link { href: path.clone(), label: uc.name.clone() });
        }
        let seo =
            seo(&layout.public_url, &path, &a, &b, use_case.as_ref(), editorial, &content, &breadcrumbs, &showcase);
        // A retired model cannot run: the studio gets its successor, and the page says so.
        let runnable = |m: &Model| match (m.is_offered(), &m.successor) {
            (false, Some(successor)) => successor.clone(),
            _ => m.slug.clone(),
        };
        let notices = [&a, &b]
            .into_iter()
            .filter(|m| !m.is_offered())
            .map(|m| {
                let successor = m.successor.as_deref().and_then(|s| catalog.model(s)).map(|s| s.name.as_str());
                match successor {
                    Some(name) => format!("{} was retired by its maker; the studio runs {name} in its place.", m.name),
                    None => format!("{} was retired by its maker and can no longer be run.", m.name),
                }
            })
            .collect();
        let (ra, rb) = (runnable(&a), runnable(&b));
        let studio = if ra == rb { format!("/studio?models={ra}") } else { format!("/studio?models={ra},{rb}") };
        let (cta_href, cta_label) = if layout.is_signed_in() {
            (studio, "Run both in the studio")
        } else {
            (format!("/signup?next={studio}"), "Try both models free")
        };
        let use_case_links =
            std::iter::once(Link { href: pair_path(&a.slug, &b.slug, None), label: "All use cases".into() })
                .chain(
                    catalog
                        .use_cases()
                        .iter()
                        .map(|u| Link { href: pair_path(&a.slug, &b.slug, Some(&u.slug)), label: u.name.clone() }),
                )
                .filter(|l| l.href != path)
                .collect();
        let related = related_pairs(&catalog, &a, &b, use_case.as_ref());
        let community = community_result(state, &a, &b, use_case.as_ref()).await;
        let gallery_later = after.is_some();
        let (gallery, gallery_next) = gallery(state, &a, &b, uc_slug, after, &path).await;
        let eyebrow = match &use_case {
            Some(uc) => format!("{} comparison", uc.name),
            None => "Model comparison".to_string(),
        };
        ComparisonPage {
            layout,
            seo,
            breadcrumbs,
            eyebrow,
            title: content.title,
            intro: content.intro,
            subcategories: use_case.as_ref().map(|u| u.subcategories.clone()).unwrap_or_default(),
            showcase,
            table: feature_table(&[&a, &b]),
            strengths: vec![
                Strengths { model_name: a.name.clone(), model_slug: a.slug.clone(), points: content.strengths_a },
                Strengths { model_name: b.name.clone(), model_slug: b.slug.clone(), points: content.strengths_b },
            ],
            verdict: content.verdict,
            faq: content.faq,
            editorial: editorial.is_some(),
            cta_href,
            cta_label,
            use_case_links,
            related,
            notices,
            community,
            picker: super::landing::PickerForm::new(&catalog, &[a.slug.as_str(), b.slug.as_str()]),
            gallery,
            gallery_next,
            gallery_later,
            a,
            b,
        }
    }
}

/// A page of the pair's published runs (for the use case, or all), and the next page's
/// address. A database failure leaves the gallery out (the rest of the page still shows).
async fn gallery(
    state: &AppState,
    a: &Model,
    b: &Model,
    use_case: Option<&str>,
    after: Option<(time::OffsetDateTime, String)>,
    path: &str,
) -> (Vec<crate::sharing::GalleryEntry>, Option<String>) {
    let limit = crate::sharing::GALLERY_PAGE;
    let rows = match crate::sharing::gallery_for_pair(&state.pool, &a.slug, &b.slug, use_case, after, limit).await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!("comparison page: gallery: {err}");
            return (Vec::new(), None);
        }
    };
    let (rows, next) = crate::web::pagination::split_page(rows, limit, |r| {
        format!(
            "{}|{}",
            r.published_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            r.share_id
        )
    });
    match crate::sharing::gallery_entries(&state.pool, &rows).await {
        Ok(entries) => (entries, next.map(|c| format!("{path}?cursor={c}#gallery"))),
        Err(err) => {
            tracing::warn!("comparison page: gallery: {err}");
            (Vec::new(), None)
        }
    }
}

/// Reads a gallery cursor's position (`published_at|share_id`).
pub fn gallery_position(text: &str) -> Option<(time::OffsetDateTime, String)> {
    let (at, id) = text.split_once('|')?;
    let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    crate::sharing::plausible_id(id).then(|| (at, id.to_string()))
}

/// "In 312 blind portrait votes, Flux Ultra 1.1 won 58% (±5%)": the pair's direct record on the
/// use case's board (or the board of all use cases) in the newest snapshot, when it has at
/// least the arena's minimum of votes; nothing otherwise. The ± is a 95% normal interval of the
/// share.
async fn community_result(
    state: &AppState,
    a: &Model,
    b: &Model,
    use_case: Option<&UseCase>,
) -> Option<(String, String)> {
    let board = use_case.map_or(crate::arena::board::ALL, |u| u.slug.as_str());
    let record = match crate::arena::board::pair_record(state.read_pool.get(), board, &a.slug, &b.slug).await {
        Ok(record) => record,
        Err(err) => {
            tracing::warn!("comparison page: arena record: {err}");
            None
        }
    };
    let (n, share_a) = record?;
    if (n as u64) < state.config.arena.min_votes {
        return None;
    }
    let (winner, share) = if share_a >= 0.5 { (&a.name, share_a) } else { (&b.name, 1.0 - share_a) };
    let margin = 1.96 * (share * (1.0 - share) / n as f64).sqrt();
    let what = use_case.map_or_else(|| "blind".to_string(), |u| format!("blind {}", u.name.to_lowercase()));
    let href = use_case.map_or_else(|| "/leaderboard".to_string(), |u| format!("/leaderboard/{}", u.slug));
    Some((format!("In {n} {what} votes, {winner} won {:.0}% (±{:.0}%).", share * 100.0, margin * 100.0), href))
}

/// The use case's showcase images, or on a general page those of the first use case.
async fn showcase_block(
    state: &AppState,
    catalog: &Catalog,
    a: &Model,
    b: &Model,
    use_case: Option<&UseCase>,
) -> Option<ShowcaseBlock> {
    let uc = use_case.or_else(|| catalog.use_cases().first())?;
    let images = state.showcases.images(uc, &[a, b]).await;
    let sandbox = images.iter().filter_map(Showcase::image).any(ShowcaseImage::is_sandbox);
    Some(ShowcaseBlock {
        use_case_name: uc.name.clone(),
        prompt: uc.showcase_prompt.clone(),
        items: [a, b].iter().zip(images).map(|(m, image)| ShowcaseItem { model_name: m.name.clone(), image }).collect(),
        sandbox,
        look_href: format!("{}/look", pair_path(&a.slug, &b.slug, Some(&uc.slug))),
        from_use_case: use_case.is_none().then(|| Link {
            href: pair_path(&a.slug, &b.slug, Some(&uc.slug)),
            label: format!("{} vs {} for {}", a.name, b.name, uc.name.to_lowercase()),
        }),
    })
}

#[allow(clippy::too_many_arguments)]
fn seo(
    base: &str,
    path: &str,
    a: &Model,
    b: &Model,
    use_case: Option<&UseCase>,
    editorial: Option<&Comparison>,
    content: &Content,
    breadcrumbs: &[Link],
    showcase: &Option<ShowcaseBlock>,
) -> Seo {
    let crumbs: Vec<(String, String)> = breadcrumbs.iter().map(|l| (l.label.clone(), l.href.clone())).collect();
    // The social card, made of both showcase images, once both are ready.
    let image = showcase.as_ref().filter(|s| s.lookable()).map(|_| format!("{base}{path}/card.png"));
    let prices =
        || (a.starting_price().map(credits).unwrap_or_default(), b.starting_price().map(credits).unwrap_or_default());
    let description = match (editorial, use_case) {
        (Some(c), _) => summary(&c.intro, 158),
        (None, Some(uc)) => {
            let (pa, pb) = prices();
            summary(
                &format!(
                    "{} vs {} for {}: the same prompt through both, features, modes and prices ({pa} vs {pb}) side by side.",
                    a.name,
                    b.name,
                    uc.name.to_lowercase(),
                ),
                158,
            )
        }
        (None, None) => {
            let (pa, pb) = prices();
            summary(
                &format!(
                    "{} vs {}: features, resolution modes, aspect ratios, variants and prices ({pa} vs {pb}) compared.",
                    a.name, b.name,
                ),
                158,
            )
        }
    };
    Seo {
        title: format!("{} — Faceoff", content.title),
        description,
        canonical: format!("{base}{path}"),
        image_size: image.as_ref().map(|_| (crate::sharing::card::WIDTH, crate::sharing::card::HEIGHT)),
        image,
        og_type: "article",
        json_ld: Some(graph(vec![faq_ld(&content.faq), breadcrumbs_ld(base, &crumbs)])),
    }
}

/// The other pairs with either model, for the same use case.
fn related_pairs(catalog: &Catalog, a: &Model, b: &Model, use_case: Option<&UseCase>) -> Vec<Link> {
    catalog
        .pairs()
        .into_iter()
        .filter(|(p, q)| {
            (p.slug == a.slug || p.slug == b.slug || q.slug == a.slug || q.slug == b.slug)
                && !(p.slug == a.slug && q.slug == b.slug)
        })
        .map(|(p, q)| {
            let label = match use_case {
                Some(uc) => format!("{} vs {} for {}", p.name, q.name, uc.name.to_lowercase()),
                None => format!("{} vs {}", p.name, q.name),
            };
            Link { href: pair_path(&p.slug, &q.slug, use_case.map(|u| u.slug.as_str())), label }
        })
        .collect()
}

/// A pair's showcase images for one use case in the comparison viewer
/// (`/compare/{a}-vs-{b}/{use_case}/look`): the web rendition first, the original the provider
/// delivered once the zoom passes it.
#[derive(askama::Template)]
#[template(path = "catalog/look.html")]
pub struct LookPage {
    layout: Layout,
    title: String,
    /// The comparison page the images belong to (also the canonical address).
    back: String,
    canonical: String,
    prompt: String,
    sandbox: bool,
    images: Vec<ViewerImage>,
}

impl LookPage {
    /// The viewer of `pair`'s showcase images; `None` when the pair names no use case.
    pub async fn build(state: &AppState, layout: Layout, pair: Pair) -> Option<Self> {
        let Pair { a, b, use_case } = pair;
        let uc = use_case?;
        let shown = state.showcases.images(&uc, &[&a, &b]).await;
        let sandbox = shown.iter().filter_map(Showcase::image).any(ShowcaseImage::is_sandbox);
        let images = [&a, &b]
            .iter()
            .zip(&shown)
            .filter_map(|(m, s)| {
                let img = s.image()?;
                let (original, width, height) = match &img.original {
                    Some((url, w, h)) => (url.clone(), *w, *h),
                    None => (img.url.clone(), img.width, img.height),
                };
                Some(ViewerImage {
                    label: m.name.clone(),
                    rendition: img.url.clone(),
                    rendition_width: i32::try_from(img.width).ok(),
                    rendition_height: i32::try_from(img.height).ok(),
                    original,
                    width: i32::try_from(width).ok(),
                    height: i32::try_from(height).ok(),
                })
            })
            .collect();
        let back = pair_path(&a.slug, &b.slug, Some(&uc.slug));
        Some(LookPage {
            canonical: format!("{}{back}", layout.public_url),
            layout,
            title: format!("{} vs {} for {}, up close", a.name, b.name, uc.name.to_lowercase()),
            back,
            prompt: uc.showcase_prompt.clone(),
            sandbox,
            images,
        })
    }
}
