//! Addresses of the catalog's pages: comparison pairs in their canonical order, the pages the
//! sitemap lists, and the picker's `models` query parameter.

use super::Catalog;

/// The most models the picker compares at once.
pub const MAX_COMPARE: usize = 4;

/// A link with its label.
pub struct Link {
    pub href: String,
    pub label: String,
}

pub fn pair_path(a: &str, b: &str, use_case: Option<&str>) -> String {
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
/// The pair in canonical (display) order, or `None` if either is unknown or they are equal.
pub fn canonical<'a>(catalog: &Catalog, x: &'a str, y: &'a str) -> Option<(&'a str, &'a str)> {
    let (px, py) = (catalog.position(x)?, catalog.position(y)?);
    match px.cmp(&py) {
        std::cmp::Ordering::Less => Some((x, y)),
        std::cmp::Ordering::Greater => Some((y, x)),
        std::cmp::Ordering::Equal => None,
    }
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

/// Every public page path listed in the sitemap.
pub fn sitemap_paths(catalog: &Catalog) -> Vec<String> {
    let mut paths = vec!["/".to_string(), "/models".to_string(), "/compare".to_string()];
    paths.extend(catalog.models().iter().map(|m| format!("/models/{}", m.slug)));
    paths.extend(catalog.use_cases().iter().map(|u| format!("/use-cases/{}", u.slug)));
    paths.extend(comparison_paths(catalog));
    paths
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
}
