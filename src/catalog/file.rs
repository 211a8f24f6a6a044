//! The catalog file (`catalog/catalog.toml`): parsing and validation. A file that does not
//! parse names the line and the reason; a file that parses but does not make sense names the
//! item (unknown provider, missing default variant, price for a mode the model does not offer,
//! duplicate slug, …). Nothing is loaded from an invalid file.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::{Catalog, CatalogProvider, Comparison, Faq, Lifecycle, Mode, Model, Route, UseCase, Variant};

/// Why a catalog file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// The TOML does not parse or does not have the expected shape.
    #[error("catalog file, line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// It parses, but an item is wrong.
    #[error("catalog file: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoot {
    #[serde(default)]
    providers: Vec<FileProvider>,
    #[serde(default)]
    models: Vec<FileModel>,
    #[serde(default)]
    use_cases: Vec<FileUseCase>,
    #[serde(default)]
    comparisons: Vec<FileComparison>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    slug: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    slug: String,
    name: String,
    provider: String,
    description: String,
    subcategories: Vec<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    image_to_image: bool,
    max_megapixels: f32,
    nsfw_rating: String,
    aspect_ratios: Vec<String>,
    modes: Vec<String>,
    #[serde(default)]
    variants: Vec<FileVariant>,
    /// `active` (the default), `retiring` or `retired`.
    #[serde(default)]
    lifecycle: Option<String>,
    #[serde(default)]
    lifecycle_note: Option<String>,
    #[serde(default)]
    successor: Option<String>,
    /// Set for models the maker bills by usage (see [`Model::usage_markup`]).
    #[serde(default)]
    usage_markup: Option<f32>,
    #[serde(default)]
    price_note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVariant {
    slug: String,
    name: String,
    endpoint: String,
    /// `via:endpoint`, in order; absent: the maker's own API (`{provider}:{endpoint}`).
    #[serde(default)]
    routes: Option<Vec<String>>,
    #[serde(default)]
    default: bool,
    prices: BTreeMap<String, i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUseCase {
    slug: String,
    name: String,
    description: String,
    #[serde(default)]
    subcategories: Vec<String>,
    showcase_prompt: String,
    showcase_aspect_ratio: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileComparison {
    models: Vec<String>,
    use_case: Option<String>,
    title: String,
    intro: String,
    strengths_a: Vec<String>,
    strengths_b: Vec<String>,
    verdict: String,
    #[serde(default)]
    faq: Vec<Faq>,
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

fn is_aspect_ratio(s: &str) -> bool {
    crate::providers::dimensions(s, Mode::TwoK).is_some()
}

/// Parses and validates the catalog file.
pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
    let root: FileRoot = toml::from_str(text).map_err(|err| CatalogError::Syntax {
        line: err.span().map(|span| line_of(text, span.start)).unwrap_or(1),
        message: err.message().trim().to_string(),
    })?;
    validate(root)
}

fn invalid(message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid(message.into())
}

fn nonblank(what: &str, field: &str, value: &str) -> Result<(), CatalogError> {
    if value.trim().is_empty() { Err(invalid(format!("{what}: `{field}` must not be empty"))) } else { Ok(()) }
}

fn validate(root: FileRoot) -> Result<Catalog, CatalogError> {
    if root.providers.is_empty() {
        return Err(invalid("no providers: add at least one [[providers]] entry"));
    }
    if root.models.is_empty() {
        return Err(invalid("no models: add at least one [[models]] entry"));
    }

    let mut providers = Vec::new();
    let mut seen = HashSet::new();
    for p in root.providers {
        let what = format!("provider `{}`", p.slug);
        if !is_slug(&p.slug) {
            return Err(invalid(format!("{what}: a slug is lowercase letters, digits and single hyphens")));
        }
        if !seen.insert(p.slug.clone()) {
            return Err(invalid(format!("duplicate provider slug `{}`", p.slug)));
        }
        nonblank(&what, "name", &p.name)?;
        providers.push(CatalogProvider { slug: p.slug, name: p.name });
    }

    let mut models = Vec::new();
    let mut seen = HashSet::new();
    for m in root.models {
        let what = format!("model `{}`", m.slug);
        if !is_slug(&m.slug) {
            return Err(invalid(format!("{what}: a slug is lowercase letters, digits and single hyphens")));
        }
        if m.slug.contains("-vs-") {
            return Err(invalid(format!("{what}: a model slug must not contain `-vs-` (comparison URLs split on it)")));
        }
        if !seen.insert(m.slug.clone()) {
            return Err(invalid(format!("duplicate model slug `{}`", m.slug)));
        }
        nonblank(&what, "name", &m.name)?;
        nonblank(&what, "description", &m.description)?;
        nonblank(&what, "nsfw_rating", &m.nsfw_rating)?;
        let provider = providers
            .iter()
            .find(|p| p.slug == m.provider)
            .ok_or_else(|| invalid(format!("{what}: unknown provider `{}`", m.provider)))?;
        if m.subcategories.is_empty() {
            return Err(invalid(format!("{what}: list at least one subcategory (e.g. \"text-to-image\")")));
        }
        if !(m.max_megapixels > 0.0 && m.max_megapixels <= 64.0) {
            return Err(invalid(format!("{what}: max_megapixels must be between 0 and 64")));
        }
        if m.aspect_ratios.is_empty() {
            return Err(invalid(format!("{what}: list at least one aspect ratio")));
        }
        let mut ratios = HashSet::new();
        for ratio in &m.aspect_ratios {
            if !is_aspect_ratio(ratio) {
                return Err(invalid(format!("{what}: `{ratio}` is not an aspect ratio like \"16:9\" (at most 4:1)")));
            }
            if !ratios.insert(ratio) {
                return Err(invalid(format!("{what}: aspect ratio `{ratio}` is listed twice")));
            }
        }
        let mut modes = Vec::new();
        for mode in &m.modes {
            let parsed = Mode::parse(mode)
                .ok_or_else(|| invalid(format!("{what}: unknown mode `{mode}` (use \"2k\" or \"4k\")")))?;
            if modes.contains(&parsed) {
                return Err(invalid(format!("{what}: mode `{mode}` is listed twice")));
            }
            modes.push(parsed);
        }
        if modes.is_empty() {
            return Err(invalid(format!("{what}: offer at least one mode")));
        }
        if m.variants.is_empty() {
            return Err(invalid(format!("{what}: has no variants; add a [[models.variants]] entry")));
        }
        let mut variants = Vec::new();
        let mut variant_slugs = HashSet::new();
        for v in m.variants {
            let vwhat = format!("model `{}`, variant `{}`", m.slug, v.slug);
            if !is_slug(&v.slug) {
                return Err(invalid(format!("{vwhat}: a slug is lowercase letters, digits and single hyphens")));
            }
            if !variant_slugs.insert(v.slug.clone()) {
                return Err(invalid(format!("{what}: duplicate variant slug `{}`", v.slug)));
            }
            nonblank(&vwhat, "name", &v.name)?;
            nonblank(&vwhat, "endpoint", &v.endpoint)?;
            let mut prices = Vec::new();
            for (mode, credits) in &v.prices {
                let parsed = Mode::parse(mode).ok_or_else(|| {
                    invalid(format!("{vwhat}: price for unknown mode `{mode}` (use \"2k\" or \"4k\")"))
                })?;
                if !modes.contains(&parsed) {
                    return Err(invalid(format!(
                        "{vwhat}: price for mode `{mode}`, which the model does not offer (its modes: {})",
                        m.modes.join(", ")
                    )));
                }
                if *credits <= 0 {
                    return Err(invalid(format!("{vwhat}: the {mode} price must be a positive number of credits")));
                }
                prices.push((parsed, *credits));
            }
            prices.sort_by_key(|(mode, _)| *mode == Mode::FourK);
            if prices.is_empty() {
                return Err(invalid(format!("{vwhat}: has no prices")));
            }
            let routes = match &v.routes {
                Some(routes) => {
                    let mut parsed = Vec::new();
                    for r in routes {
                        let route = Route::parse(r).ok_or_else(|| {
                            invalid(format!(
                                "{vwhat}: route `{r}` is not `adapter:endpoint` with an adapter among {}",
                                crate::providers::ADAPTERS.join(", ")
                            ))
                        })?;
                        if parsed.contains(&route) {
                            return Err(invalid(format!("{vwhat}: route `{r}` is listed twice")));
                        }
                        parsed.push(route);
                    }
                    if parsed.is_empty() {
                        return Err(invalid(format!("{vwhat}: list at least one route")));
                    }
                    parsed
                }
                None => match Route::parse(&format!("{}:{}", m.provider, v.endpoint)) {
                    Some(route) => vec![route],
                    None => {
                        return Err(invalid(format!(
                            "{vwhat}: no adapter reaches provider `{}`; list `routes` (e.g. \"fal:…\")",
                            m.provider
                        )));
                    }
                },
            };
            variants.push(Variant {
                slug: v.slug,
                name: v.name,
                endpoint: v.endpoint,
                routes,
                is_default: v.default,
                prices,
            });
        }
        match variants.iter().filter(|v| v.is_default).count() {
            0 => return Err(invalid(format!("{what}: no default variant; mark one with `default = true`"))),
            1 => {}
            _ => return Err(invalid(format!("{what}: more than one default variant"))),
        }
        let default = variants.iter().find(|v| v.is_default).map(|v| (v.slug.clone(), v.prices.clone()));
        if let Some((slug, prices)) = default {
            for mode in &modes {
                if !prices.iter().any(|(m, _)| m == mode) {
                    return Err(invalid(format!(
                        "{what}: the default variant `{slug}` has no price for mode `{}`, which the model offers",
                        mode.as_str()
                    )));
                }
            }
        }
        let lifecycle = match m.lifecycle.as_deref() {
            None => Lifecycle::Active,
            Some(l) => Lifecycle::parse(l).ok_or_else(|| {
                invalid(format!("{what}: unknown lifecycle `{l}` (use \"active\", \"retiring\" or \"retired\")"))
            })?,
        };
        if lifecycle == Lifecycle::Retired && m.successor.is_none() {
            return Err(invalid(format!("{what}: a retired model names its `successor`")));
        }
        if let Some(markup) = m.usage_markup
            && !(markup > 0.0 && markup <= 10.0)
        {
            return Err(invalid(format!("{what}: usage_markup must be between 0 and 10")));
        }
        models.push(Model {
            lifecycle,
            lifecycle_note: m.lifecycle_note.filter(|n| !n.trim().is_empty()),
            successor: m.successor,
            usage_markup: m.usage_markup,
            price_note: m.price_note,
            slug: m.slug,
            name: m.name,
            provider: provider.slug.clone(),
            provider_name: provider.name.clone(),
            description: m.description,
            subcategories: m.subcategories,
            capabilities: m.capabilities,
            image_to_image: m.image_to_image,
            max_megapixels: m.max_megapixels,
            nsfw_rating: m.nsfw_rating,
            aspect_ratios: m.aspect_ratios,
            variants,
        });
    }

    for m in &models {
        if let Some(successor) = &m.successor {
            let ok = models.iter().any(|s| &s.slug == successor && s.slug != m.slug && s.is_offered());
            if !ok {
                return Err(invalid(format!(
                    "model `{}`: successor `{successor}` is not another offered model of the catalog",
                    m.slug
                )));
            }
        }
    }

    let mut use_cases = Vec::new();
    let mut seen = HashSet::new();
    for u in root.use_cases {
        let what = format!("use case `{}`", u.slug);
        if !is_slug(&u.slug) {
            return Err(invalid(format!("{what}: a slug is lowercase letters, digits and single hyphens")));
        }
        if !seen.insert(u.slug.clone()) {
            return Err(invalid(format!("duplicate use case slug `{}`", u.slug)));
        }
        nonblank(&what, "name", &u.name)?;
        nonblank(&what, "description", &u.description)?;
        nonblank(&what, "showcase_prompt", &u.showcase_prompt)?;
        if !is_aspect_ratio(&u.showcase_aspect_ratio) {
            return Err(invalid(format!("{what}: `{}` is not an aspect ratio like \"3:4\"", u.showcase_aspect_ratio)));
        }
        use_cases.push(UseCase {
            slug: u.slug,
            name: u.name,
            subcategories: u.subcategories,
            description: u.description,
            showcase_prompt: u.showcase_prompt,
            showcase_aspect_ratio: u.showcase_aspect_ratio,
        });
    }

    let mut comparisons: Vec<Comparison> = Vec::new();
    for c in root.comparisons {
        let pair = c.models.join("-vs-");
        let what = match &c.use_case {
            Some(u) => format!("comparison `{pair}/{u}`"),
            None => format!("comparison `{pair}`"),
        };
        let [a, b] = <[String; 2]>::try_from(c.models)
            .map_err(|_| invalid(format!("{what}: `models` must name exactly two models")))?;
        let pa =
            models.iter().position(|m| m.slug == a).ok_or_else(|| invalid(format!("{what}: unknown model `{a}`")))?;
        let pb =
            models.iter().position(|m| m.slug == b).ok_or_else(|| invalid(format!("{what}: unknown model `{b}`")))?;
        if pa == pb {
            return Err(invalid(format!("{what}: compares a model with itself")));
        }
        if pa > pb {
            return Err(invalid(format!(
                "{what}: list the models in display order (`{b}` comes before `{a}` in the file)"
            )));
        }
        if let Some(u) = &c.use_case
            && !use_cases.iter().any(|uc| &uc.slug == u)
        {
            return Err(invalid(format!("{what}: unknown use case `{u}`")));
        }
        if comparisons.iter().any(|x| x.model_a == a && x.model_b == b && x.use_case == c.use_case) {
            return Err(invalid(format!("duplicate {what}")));
        }
        nonblank(&what, "title", &c.title)?;
        nonblank(&what, "intro", &c.intro)?;
        nonblank(&what, "verdict", &c.verdict)?;
        for faq in &c.faq {
            nonblank(&what, "faq.question", &faq.question)?;
            nonblank(&what, "faq.answer", &faq.answer)?;
        }
        comparisons.push(Comparison {
            model_a: a,
            model_b: b,
            use_case: c.use_case,
            title: c.title,
            intro: c.intro,
            strengths_a: c.strengths_a,
            strengths_b: c.strengths_b,
            verdict: c.verdict,
            faq: c.faq,
        });
    }

    Ok(Catalog { providers, models, use_cases, comparisons })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[providers]]
slug = "bfl"
name = "Black Forest Labs"

[[models]]
slug = "m-one"
name = "M One"
provider = "bfl"
description = "d"
subcategories = ["text-to-image"]
image_to_image = false
max_megapixels = 2.0
nsfw_rating = "Strict"
aspect_ratios = ["1:1"]
modes = ["2k"]

  [[models.variants]]
  slug = "standard"
  name = "Standard"
  endpoint = "e"
  default = true
  prices = { "2k" = 10 }
"#;

    fn err(text: &str) -> CatalogError {
        parse(text).expect_err("the file should be refused")
    }

    #[test]
    fn the_shipped_catalog_is_valid_and_has_the_seed_facts() {
        let catalog = parse(super::super::CATALOG_TOML).expect("catalog/catalog.toml is valid");
        let flux2 = catalog.model("flux-2").expect("flux-2");
        assert_eq!(flux2.provider_name, "Black Forest Labs");
        assert_eq!(flux2.subcategories, ["text-to-image", "image-to-image"]);
        assert_eq!(flux2.modes(), [Mode::TwoK, Mode::FourK]);
        assert_eq!(flux2.nsfw_rating, "Low");
        assert_eq!(flux2.aspect_ratios, ["1:1", "16:9", "9:16", "3:4", "4:3"]);
        assert_eq!(flux2.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["Standard", "Klein 9B"]);
        assert_eq!(flux2.starting_price(), Some(22));
        assert_eq!(flux2.price("klein-9b", Mode::TwoK), Some(16));
        assert_eq!(flux2.default_variant().endpoint, "flux-2-pro");
        assert_eq!(flux2.variant("klein-9b").map(|v| v.endpoint.as_str()), Some("flux-2-klein-9b"));
        let ultra = catalog.model("flux-ultra-1-1").expect("flux-ultra-1-1");
        assert_eq!(ultra.subcategories, ["text-to-image"]);
        assert_eq!(ultra.modes(), [Mode::TwoK]);
        assert_eq!(ultra.price("standard", Mode::FourK), None);
        assert_eq!(ultra.nsfw_rating, "Strict");
        assert_eq!(ultra.aspect_ratios, ["1:1", "16:9", "9:16", "3:4", "4:3", "21:9"]);
        assert_eq!(ultra.variants.len(), 1);
        assert_eq!(ultra.starting_price(), Some(16));
        assert_eq!(ultra.default_variant().endpoint, "flux-pro-1.1-ultra");
        for (slug, endpoint) in [
            ("flux-2-max", "flux-2-max"),
            ("flux-2-flex", "flux-2-flex"),
            ("flux-1-1-pro", "flux-pro-1.1"),
            ("flux-kontext-pro", "flux-kontext-pro"),
        ] {
            assert_eq!(catalog.model(slug).map(|m| m.default_variant().endpoint.as_str()), Some(endpoint));
        }
        let portrait = catalog.use_case("portrait").expect("portrait");
        assert_eq!(portrait.subcategories, ["Close-up headshots", "Environmental portraits"]);
        assert!(catalog.comparison("flux-2", "flux-ultra-1-1", Some("portrait")).is_some());
    }

    #[test]
    fn a_minimal_file_parses() {
        let catalog = parse(MINIMAL).expect("valid");
        assert_eq!(catalog.models().len(), 1);
        assert_eq!(catalog.models()[0].starting_price(), Some(10));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let text = MINIMAL.replace("max_megapixels = 2.0", "max_megapixels = = 2.0");
        let line = text.lines().position(|l| l.contains("= = 2.0")).expect("line") + 1;
        match err(&text) {
            CatalogError::Syntax { line: got, .. } => assert_eq!(got, line),
            other => panic!("expected a syntax error, got {other:?}"),
        }
        // A wrong type is reported at its line too, with the reason.
        let text = MINIMAL.replace("image_to_image = false", "image_to_image = \"no\"");
        let line = text.lines().position(|l| l.contains("image_to_image")).expect("line") + 1;
        let error = err(&text);
        assert!(matches!(error, CatalogError::Syntax { line: got, .. } if got == line), "{error:?}");
        assert!(error.to_string().contains(&format!("line {line}")), "{error}");
        // Unknown fields are typos, not silently ignored.
        let text = MINIMAL.replace("nsfw_rating = \"Strict\"", "nsfw_ratin = \"Strict\"");
        let error = err(&text);
        assert!(error.to_string().contains("nsfw_ratin"), "{error}");
        // An unterminated string.
        let text = MINIMAL.replace("name = \"M One\"", "name = \"M One");
        let line = text.lines().position(|l| l.contains("\"M One")).expect("line") + 1;
        assert!(matches!(err(&text), CatalogError::Syntax { line: got, .. } if got == line));
    }

    #[test]
    fn semantic_errors_name_the_item() {
        let e = err(&MINIMAL.replace("provider = \"bfl\"", "provider = \"acme\"")).to_string();
        assert!(e.contains("model `m-one`") && e.contains("unknown provider `acme`"), "{e}");

        let e = err(&MINIMAL.replace("default = true", "default = false")).to_string();
        assert!(e.contains("model `m-one`") && e.contains("no default variant"), "{e}");

        let e = err(&MINIMAL.replace("prices = { \"2k\" = 10 }", "prices = { \"2k\" = 10, \"4k\" = 20 }")).to_string();
        assert!(e.contains("variant `standard`") && e.contains("mode `4k`") && e.contains("does not offer"), "{e}");

        let twice = format!("{MINIMAL}\n{}", &MINIMAL[MINIMAL.find("[[models]]").expect("models")..]);
        let e = err(&twice).to_string();
        assert!(e.contains("duplicate model slug `m-one`"), "{e}");

        let e = err(&MINIMAL.replace("modes = [\"2k\"]", "modes = [\"2k\", \"4k\"]")).to_string();
        assert!(e.contains("default variant `standard` has no price for mode `4k`"), "{e}");

        let e = err(&MINIMAL.replace("slug = \"m-one\"", "slug = \"a-vs-b\"")).to_string();
        assert!(e.contains("-vs-"), "{e}");

        let e = err(&MINIMAL.replace("aspect_ratios = [\"1:1\"]", "aspect_ratios = [\"wide\"]")).to_string();
        assert!(e.contains("`wide` is not an aspect ratio"), "{e}");

        let e = err(&MINIMAL.replace("prices = { \"2k\" = 10 }", "prices = { \"2k\" = 0 }")).to_string();
        assert!(e.contains("positive"), "{e}");

        let comparison = format!(
            "{MINIMAL}\n[[comparisons]]\nmodels = [\"m-one\", \"m-two\"]\ntitle = \"t\"\nintro = \"i\"\n\
             strengths_a = []\nstrengths_b = []\nverdict = \"v\"\n"
        );
        let e = err(&comparison).to_string();
        assert!(e.contains("comparison `m-one-vs-m-two`") && e.contains("unknown model `m-two`"), "{e}");
    }

    #[test]
    fn line_numbers_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
