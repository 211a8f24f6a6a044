//! The module picture (README, "Map of the code"), checked on the source: imports only go down.
//!
//! - A domain's core (its `mod.rs`, SQL and logic) never imports the HTTP edge: not `web`, not the
//!   application state, not `app`, not axum. Only its route files do: `routes.rs`, `pages.rs`,
//!   `api.rs`, and files under a `routes/` or `pages/` folder.
//! - `web`, the edge toolkit, knows the domain cores but no route file, no `app` and no state.
//! - The infrastructure (`config`, `db`) knows nothing above it.

use std::path::{Path, PathBuf};

const DOMAINS: &[&str] = &[
    "accounts",
    "arena",
    "catalog",
    "jobs",
    "ledger",
    "mail",
    "payments",
    "providers",
    "runs",
    "sharing",
    "storage",
    "webhooks",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without comments and without its unit tests (`#[cfg(test)] mod tests` at the
/// end, and whole `tests.rs` files, may use anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn is_edge_file(relative: &Path) -> bool {
    let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
    matches!(name, "routes.rs" | "pages.rs" | "api.rs")
        || relative.components().any(|c| matches!(c.as_os_str().to_str(), Some("routes" | "pages")))
}

fn violations(files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let code = code(file);
        for needle in forbidden {
            // A whole path segment: `crate::web` is not `crate::webhooks`.
            let whole = code
                .match_indices(needle)
                .any(|(at, _)| !code[at + needle.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'));
            if whole {
                found.push(format!("{} uses {needle}", file.strip_prefix(src()).unwrap_or(file).display()));
            }
        }
    }
    found
}

#[test]
fn domain_cores_never_import_the_http_edge() {
    let mut cores = Vec::new();
    for domain in DOMAINS {
        let mut files = Vec::new();
        rust_files(&src().join(domain), &mut files);
        cores.extend(files.into_iter().filter(|f| {
            let relative = f.strip_prefix(src()).expect("under src");
            !is_edge_file(relative) && f.file_name().is_some_and(|n| n != "tests.rs")
        }));
    }
    assert!(cores.len() > 25, "found the domain cores: {}", cores.len());
    let found = violations(
        &cores,
        &["crate::web", "crate::state", "crate::app", "AppState", "axum::", "use axum", "crate::server"],
    );
    assert!(found.is_empty(), "domain cores importing the edge:\n{}", found.join("\n"));
}

#[test]
fn the_edge_toolkit_knows_no_route_file_and_no_application() {
    let mut files = Vec::new();
    rust_files(&src().join("web"), &mut files);
    let mut forbidden = vec!["crate::app", "crate::state", "AppState", "crate::server"];
    let route_modules: Vec<String> =
        DOMAINS.iter().flat_map(|d| ["routes", "pages", "api"].map(|m| format!("{d}::{m}"))).collect();
    forbidden.extend(route_modules.iter().map(String::as_str));
    let found = violations(&files, &forbidden);
    assert!(found.is_empty(), "web importing what sits above it:\n{}", found.join("\n"));
}

#[test]
fn the_infrastructure_knows_nothing_above_it() {
    let mut files = vec![src().join("config.rs")];
    rust_files(&src().join("db"), &mut files);
    let mut forbidden = vec!["crate::web", "crate::state", "crate::app", "crate::server"];
    let domains: Vec<String> = DOMAINS.iter().map(|d| format!("crate::{d}")).collect();
    forbidden.extend(domains.iter().map(String::as_str));
    let found = violations(&files, &forbidden);
    assert!(found.is_empty(), "infrastructure importing what sits above it:\n{}", found.join("\n"));
}
