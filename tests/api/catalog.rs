//! The catalog: loading catalog/catalog.toml, the model and comparison pages, the picker, the
//! showcase images, search-engine metadata, the sitemap and robots.txt.

use std::{collections::HashSet, time::Duration};

use faceoff::catalog::{self, CATALOG_TOML, db::LoadOutcome};
use reqwest::StatusCode;

use crate::helpers::{Page, TestApp, TestDb};

const SEED: &str = "/compare/flux-2-vs-flux-ultra-1-1/portrait";

/// The feature table as (row label, values) pairs, read from the DOM.
fn feature_rows(page: &Page) -> Vec<(String, Vec<String>)> {
    let row_sel = scraper::Selector::parse("table.feature-table tbody tr").expect("selector");
    let th = scraper::Selector::parse("th").expect("selector");
    let td = scraper::Selector::parse("td").expect("selector");
    let text = |el: scraper::ElementRef| el.text().collect::<String>().split_whitespace().collect::<Vec<_>>().join(" ");
    page.html
        .select(&row_sel)
        .map(|row| {
            let label = row.select(&th).next().map(text).unwrap_or_default();
            (label, row.select(&td).map(text).collect())
        })
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Parses every JSON-LD block of a page; returns the `@type`s found in their `@graph`s.
fn json_ld_types(page: &Page, what: &str) -> Vec<String> {
    let sel = scraper::Selector::parse("script[type=\"application/ld+json\"]").expect("selector");
    let mut types = Vec::new();
    for script in page.html.select(&sel) {
        let text: String = script.text().collect();
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: JSON-LD does not parse: {e}: {text}"));
        assert_eq!(value["@context"], "https://schema.org", "{what}");
        for item in value["@graph"].as_array().unwrap_or_else(|| panic!("{what}: no @graph")) {
            types.push(item["@type"].as_str().unwrap_or_default().to_string());
        }
    }
    types
}

/// Polls `path` until it shows `want` showcase images. The deadline is generous: with the full
/// suite running, the sitemap walk generates every model's showcase images (100 of them) at the
/// same time on a shared 2-core machine.
async fn page_with_showcase_images(app: &TestApp, path: &str, selector: &str, want: usize) -> Page {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (status, page) = app.page(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        if page.count(selector) == want {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: showcase images never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_seed_comparison_has_the_designs_facts_and_real_showcase_images() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page(SEED).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed(SEED);

    // The table, exactly as in the design.
    assert_eq!(page.texts("table.feature-table thead th"), strings(&["Feature", "Flux 2", "Flux Ultra 1.1"]));
    assert_eq!(
        feature_rows(&page),
        vec![
            ("Provider".to_string(), strings(&["Black Forest Labs", "Black Forest Labs"])),
            ("Subcategories".to_string(), strings(&["text-to-image, image-to-image", "text-to-image"])),
            ("1080p / 2k Mode".to_string(), strings(&["Yes", "Yes"])),
            ("4k Mode".to_string(), strings(&["Yes", "No"])),
            ("NSFW Rating".to_string(), strings(&["Low", "Strict"])),
            ("Aspect Ratio".to_string(), strings(&["1:1, 16:9, 9:16, 3:4, 4:3", "1:1, 16:9, 9:16, 3:4, 4:3, 21:9"])),
            ("Model Variant".to_string(), strings(&["Standard, Klein 9B", "—"])),
            ("Starting Price".to_string(), strings(&["22 credits", "16 credits"])),
        ]
    );

    // The seed page's sections, in order.
    assert_eq!(page.text("h1").as_deref(), Some("Flux 2 vs Flux Ultra 1.1 for portraits"));
    assert!(page.text("[data-testid=intro]").is_some_and(|t| t.len() > 100));
    assert!(page.text("[data-testid=showcase-prompt]").is_some_and(|t| t.contains("coffee check-in")));
    assert_eq!(
        page.attrs("main h2[id]", "id"),
        strings(&[
            "showcase-heading",
            "features-heading",
            "strengths-heading",
            "verdict-heading",
            "faq-heading",
            // Runs people published (tests/api/sharing.rs), after the seed's sections.
            "gallery-heading"
        ])
    );
    assert_eq!(page.texts(".strengths h3"), strings(&["Where Flux 2 shines", "Where Flux Ultra 1.1 shines"]));
    assert!(page.count(".strengths li") >= 4);
    assert!(page.text("[data-testid=verdict]").is_some_and(|t| t.len() > 50));
    assert!(page.count(".faq details summary") >= 3);
    assert_eq!(
        page.attr("[data-testid=cta]", "href").as_deref(),
        Some("/signup?next=/studio?models=flux-2,flux-ultra-1-1")
    );
    assert_eq!(page.text("[data-testid=cta]").as_deref(), Some("Try both models free"));

    // Search engines.
    assert_eq!(page.text("title").as_deref(), Some("Flux 2 vs Flux Ultra 1.1 for portraits — Faceoff"));
    assert_eq!(page.attr("link[rel=canonical]", "href").as_deref(), Some(&*format!("http://127.0.0.1:3000{SEED}")));
    assert!(page.attr("meta[name=description]", "content").is_some_and(|d| !d.is_empty() && d.len() <= 170));
    assert_eq!(page.attr("meta[property=\"og:type\"]", "content").as_deref(), Some("article"));
    let types = json_ld_types(&page, SEED);
    assert!(types.contains(&"FAQPage".to_string()) && types.contains(&"BreadcrumbList".to_string()), "{types:?}");

    // Both showcase images arrive, load, decode, and match their declared size.
    let page = page_with_showcase_images(&app, SEED, ".showcase img", 2).await;
    page.assert_well_formed(SEED);
    let sel = scraper::Selector::parse(".showcase img").expect("selector");
    let mut sources = HashSet::new();
    for img in page.html.select(&sel) {
        let attr = |name: &str| img.value().attr(name).unwrap_or_else(|| panic!("img without {name}")).to_string();
        let (src, width, height) = (attr("src"), attr("width"), attr("height"));
        assert_eq!(attr("loading"), "lazy");
        assert!(!attr("alt").is_empty());
        let response = app.get(&src).await;
        assert_eq!(response.status(), StatusCode::OK, "{src}");
        let content_type = response.headers()["content-type"].to_str().expect("content type").to_string();
        assert!(content_type.starts_with("image/"), "{src}: {content_type}");
        let bytes = response.bytes().await.expect("image bytes");
        let decoded = image::load_from_memory(&bytes).expect("the showcase image decodes");
        assert_eq!(decoded.width().to_string(), width, "{src}");
        assert_eq!(decoded.height().to_string(), height, "{src}");
        assert_eq!(decoded.width(), 800, "web-sized");
        assert!(bytes.len() < 400_000, "{src}: {} bytes is too heavy for a page", bytes.len());
        sources.insert(src);
    }
    assert_eq!(sources.len(), 2, "two different images");
    assert!(page.text("[data-testid=sandbox-note]").is_some_and(|t| t.contains("sandbox")));
    let og_image = page.attr("meta[property=\"og:image\"]", "content").expect("og:image once images exist");
    // The social card made of both showcase images (tests/api/sharing.rs checks the PNG).
    assert!(og_image.starts_with("http://127.0.0.1:3000/compare/") && og_image.ends_with("/card.png"), "{og_image}");
    assert_eq!(page.attr("meta[property=\"og:image:width\"]", "content").as_deref(), Some("1200"));
    assert_eq!(page.attr("meta[property=\"og:image:height\"]", "content").as_deref(), Some("630"));
    assert_eq!(page.attr("meta[name=\"twitter:card\"]", "content").as_deref(), Some("summary_large_image"));

    // Generated once: one row per model, whatever the number of requests.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM showcase_image WHERE use_case_slug = 'portrait'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert!(rows >= 2);

    // Signed in, the call to action goes straight to the studio.
    app.signed_in_user(100).await;
    let (_, page) = app.page(SEED).await;
    assert_eq!(page.attr("[data-testid=cta]", "href").as_deref(), Some("/studio?models=flux-2,flux-ultra-1-1"));
}

#[tokio::test]
async fn concurrent_first_requests_generate_each_showcase_image_once() {
    let app = TestApp::spawn().await;
    let path = "/compare/flux-2-max-vs-flux-2-flex/landscape";
    let requests = (0..8).map(|_| app.get(path));
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    page_with_showcase_images(&app, path, ".showcase img", 2).await;
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "SELECT model_slug, attempts FROM showcase_image WHERE use_case_slug = 'landscape' ORDER BY model_slug",
    )
    .fetch_all(&app.pool)
    .await
    .expect("rows");
    assert_eq!(rows, vec![("flux-2-flex".to_string(), 1), ("flux-2-max".to_string(), 1)]);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM media_object WHERE key LIKE 'showcase/landscape/%'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 4, "an original and a web rendition per model");
}

/// Polls the (portrait, `model`) showcase row until `done` accepts its (status, attempts).
async fn showcase_row_until(app: &TestApp, model: &str, done: impl Fn(&str, i32) -> bool) -> (String, i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row: Option<(String, i32)> = sqlx::query_as(
            "SELECT status, attempts FROM showcase_image WHERE use_case_slug = 'portrait' AND model_slug = $1",
        )
        .bind(model)
        .fetch_optional(&app.pool)
        .await
        .expect("showcase row");
        if let Some((status, attempts)) = &row
            && done(status, *attempts)
        {
            return (status.clone(), *attempts);
        }
        assert!(tokio::time::Instant::now() < deadline, "showcase row of {model} stuck at {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_showcase_image_that_keeps_failing_is_shown_as_unavailable_and_retried_later() {
    let app = TestApp::spawn_with(|c| c.sandbox_fail = vec!["flux-2".into()]).await;
    const SEED: &str = "/compare/flux-2-vs-flux-ultra-1-1/portrait";

    // The first failure: the other model's image arrives, Flux 2's stays "generating".
    page_with_showcase_images(&app, SEED, ".showcase img", 1).await;
    showcase_row_until(&app, "flux-2", |status, _| status == "failed").await;
    let (_, page) = app.page(SEED).await;
    assert_eq!(page.count(".showcase .showcase-pending"), 1, "{}", page.source);
    assert_eq!(page.count("[data-testid=showcase-unavailable]"), 0);

    // After the last allowed attempt the page stops promising an image, and nothing retries.
    sqlx::query("UPDATE showcase_image SET attempts = 5 WHERE use_case_slug = 'portrait' AND model_slug = 'flux-2'")
        .execute(&app.pool)
        .await
        .expect("exhaust attempts");
    for _ in 0..3 {
        let (status, page) = app.page(SEED).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page.count("[data-testid=showcase-unavailable]"), 1, "{}", page.source);
        assert_eq!(page.count(".showcase .showcase-pending"), 0);
        assert_eq!(page.count(".showcase img"), 1);
    }
    let (status, attempts) = showcase_row_until(&app, "flux-2", |_, _| true).await;
    assert_eq!((status.as_str(), attempts), ("failed", 5), "no new attempt within the hour");

    // An hour after the last failure, the next view tries again (and fails again here).
    let mut tx = faceoff::db::begin(&app.pool).await.expect("tx");
    sqlx::query("ALTER TABLE showcase_image DISABLE TRIGGER showcase_image_updated_at")
        .execute(&mut *tx)
        .await
        .expect("trigger");
    sqlx::query("UPDATE showcase_image SET updated_at = now() - interval '61 minutes' WHERE model_slug = 'flux-2'")
        .execute(&mut *tx)
        .await
        .expect("age the failure");
    sqlx::query("ALTER TABLE showcase_image ENABLE TRIGGER showcase_image_updated_at")
        .execute(&mut *tx)
        .await
        .expect("trigger");
    tx.commit().await.expect("commit");
    let (status, _) = app.page(SEED).await;
    assert_eq!(status, StatusCode::OK);
    let (status, attempts) =
        showcase_row_until(&app, "flux-2", |status, attempts| status == "failed" && attempts == 6).await;
    assert_eq!((status.as_str(), attempts), ("failed", 6));
}

#[tokio::test]
async fn a_showcase_generation_stopped_by_shutdown_gives_its_claim_back() {
    // A slow sandbox: the generations the page starts are still polling when the process stops.
    let app = TestApp::spawn_with(|c| c.sandbox_latency = Duration::from_secs(120)).await;
    let (status, _) = app.page(SEED).await;
    assert_eq!(status, StatusCode::OK);
    showcase_row_until(&app, "flux-2", |status, attempts| status == "pending" && attempts == 1).await;

    app.state.shutdown.cancel();
    // Given back: claimable at once, and the interrupted attempt does not count.
    let (status, attempts) = showcase_row_until(&app, "flux-2", |_, attempts| attempts == 0).await;
    assert_eq!(status, "pending");
    let claimable: bool = sqlx::query_scalar(
        "SELECT claimed_at = '-infinity' FROM showcase_image WHERE use_case_slug = 'portrait' AND model_slug = 'flux-2'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("claimed_at");
    assert!(claimable, "attempts {attempts}");

    // Another process (a fast sandbox here) takes it over without waiting for the claim to go stale.
    let deps = faceoff::catalog::showcase::ShowcaseDeps::new(
        app.pool.clone(),
        app.state.store.clone(),
        faceoff::providers::Providers::from_config(&crate::helpers::test_config()).expect("providers"),
    );
    let catalog = app.state.catalog.current();
    let (use_case, model) = (catalog.use_case("portrait").expect("use case"), catalog.model("flux-2").expect("model"));
    faceoff::catalog::showcase::generate(&deps, use_case, model, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("generate");
    let (status, attempts) = showcase_row_until(&app, "flux-2", |_, _| true).await;
    assert_eq!((status.as_str(), attempts), ("ready", 1));
}

#[tokio::test]
async fn a_configured_catalog_file_is_the_one_loaded_at_start() {
    let dir = std::env::temp_dir().join(format!("faceoff-catalog-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("catalog.toml");
    let edited = CATALOG_TOML.replacen(
        "Black Forest Labs' second-generation FLUX model",
        "A description chosen by this operator for the second-generation FLUX model",
        1,
    );
    assert_ne!(edited, CATALOG_TOML);
    std::fs::write(&file, &edited).expect("write catalog");

    let app = TestApp::spawn_with(|c| c.catalog_file = Some(file.clone())).await;
    let (status, page) = app.page("/models/flux-2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.source.contains("A description chosen by this operator"), "the configured catalog was not loaded");

    // A configured file that cannot be read stops start-up and says which variable to fix.
    let mut config = crate::helpers::test_config();
    config.catalog_file = Some(dir.join("missing.toml"));
    let err = faceoff::server::prepare_database(&app.pool, &config).await.expect_err("missing file");
    assert!(format!("{err:#}").contains("FACEOFF_CATALOG_FILE"), "{err:#}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn every_page_in_the_sitemap_answers_with_valid_html() {
    let app = TestApp::spawn().await;
    let response = app.get("/sitemap.xml").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().expect("type").starts_with("application/xml"));
    let xml = response.text().await.expect("body");
    assert!(xml.starts_with("<?xml") && xml.contains("<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">"));
    let locs: Vec<String> =
        xml.split("<loc>").skip(1).map(|rest| rest.split("</loc>").next().expect("closing loc").to_string()).collect();
    let catalog = app.state.catalog.current();
    let pairs = catalog.models().len() * (catalog.models().len() - 1) / 2;
    assert_eq!(
        locs.len(),
        3 + catalog.models().len() + catalog.use_cases().len() + pairs * (1 + catalog.use_cases().len())
    );
    assert!(locs.contains(&format!("http://127.0.0.1:3000{SEED}")));

    let mut titles = HashSet::new();
    let mut descriptions = HashSet::new();
    for loc in &locs {
        let path = loc.strip_prefix("http://127.0.0.1:3000").unwrap_or_else(|| panic!("{loc} is not absolute"));
        let (status, page) = app.page(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        page.assert_well_formed(path);
        let title = page.text("title").expect("title");
        assert!(titles.insert(title.clone()), "{path}: duplicate title {title}");
        let description = page.attr("meta[name=description]", "content").expect("description");
        assert!(descriptions.insert(description.clone()), "{path}: duplicate description {description}");
        if path == "/" {
            continue;
        }
        assert_eq!(page.attr("link[rel=canonical]", "href").as_deref(), Some(loc.as_str()), "{path}");
        assert!(page.attr("meta[property=\"og:title\"]", "content").is_some(), "{path}");
        let types = json_ld_types(&page, path);
        assert!(types.contains(&"BreadcrumbList".to_string()), "{path}: {types:?}");
        assert_eq!(page.count("nav.breadcrumbs a[aria-current=page]"), 1, "{path}");
        if path.starts_with("/compare/") {
            assert!(types.contains(&"FAQPage".to_string()), "{path}");
            let labels: Vec<String> = feature_rows(&page).into_iter().map(|(label, _)| label).collect();
            assert_eq!(
                labels,
                strings(&[
                    "Provider",
                    "Subcategories",
                    "1080p / 2k Mode",
                    "4k Mode",
                    "NSFW Rating",
                    "Aspect Ratio",
                    "Model Variant",
                    "Starting Price"
                ]),
                "{path}"
            );
            assert_eq!(page.count("table.feature-table tbody td"), 16, "{path}");
            assert_eq!(page.count(".strengths h3"), 2, "{path}");
            assert!(page.count(".strengths li") >= 2, "{path}: no strengths");
            assert!(page.text("[data-testid=verdict]").is_some_and(|v| !v.is_empty()), "{path}");
            assert!(page.count(".faq details") >= 3, "{path}");
            assert_eq!(page.count(".showcase figure.result"), 2, "{path}");
        }
        if let Some(slug) = path.strip_prefix("/models/") {
            assert!(page.count("table.price-table tbody tr") >= 1, "{path}");
            assert!(page.count(&format!("a[href^=\"/compare/\"][href*=\"{slug}\"]")) >= 5, "{path}: comparison links");
        }
    }

    let robots = app.get("/robots.txt").await;
    assert_eq!(robots.status(), StatusCode::OK);
    let robots = robots.text().await.expect("robots");
    assert!(robots.contains("User-agent: *") && robots.contains("Allow: /"), "{robots}");
    assert!(robots.contains("Sitemap: http://127.0.0.1:3000/sitemap.xml"), "{robots}");
}

#[tokio::test]
async fn the_reverse_order_redirects_permanently_to_the_canonical_page() {
    let app = TestApp::spawn().await;
    for (from, to) in [
        ("/compare/flux-ultra-1-1-vs-flux-2/portrait", SEED),
        ("/compare/flux-ultra-1-1-vs-flux-2", "/compare/flux-2-vs-flux-ultra-1-1"),
        ("/compare/flux-kontext-pro-vs-flux-2-max/landscape", "/compare/flux-2-max-vs-flux-kontext-pro/landscape"),
    ] {
        let response = app.get(from).await;
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY, "{from}");
        assert_eq!(response.headers()["location"], to, "{from}");
    }
    for path in [
        "/compare/flux-2-vs-nope",
        "/compare/flux-2-vs-flux-2",
        "/compare/flux-2",
        "/compare/flux-2-vs-flux-ultra-1-1/underwater",
        "/models/nope",
    ] {
        let (status, page) = app.page(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        page.assert_well_formed(path);
    }
    let (_, page) = app.page("/compare/flux-2-vs-nope").await;
    assert!(page.text("main").is_some_and(|t| t.contains("nope")));
}

#[tokio::test]
async fn the_picker_compares_two_to_four_models_and_explains_mistakes() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page("/compare").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("/compare");
    assert_eq!(page.count("form[method=get][action=\"/compare\"] input[type=checkbox][name=models]"), 20);
    assert_eq!(page.count("table.feature-table"), 0);
    assert!(page.text("[data-picker-status]").is_some_and(|t| t.contains("up to 4")));

    for path in [
        "/compare?models=flux-2,flux-ultra-1-1,flux-2-max",
        "/compare?models=flux-2&models=flux-ultra-1-1&models=flux-2-max",
    ] {
        let (status, page) = app.page(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        page.assert_well_formed(path);
        assert_eq!(
            page.texts("table.feature-table thead th"),
            strings(&["Feature", "Flux 2", "Flux Ultra 1.1", "FLUX.2 [max]"]),
            "{path}"
        );
        assert_eq!(feature_rows(&page).len(), 8);
        assert_eq!(page.count("input[name=models][checked]"), 3, "{path}: the choice is kept");
        assert!(page.count("a[href=\"/compare/flux-2-vs-flux-ultra-1-1\"]") >= 1, "{path}: pair links");
        assert_eq!(
            page.attr("main a[href^=\"/studio?\"]", "href").as_deref(),
            Some("/studio?models=flux-2,flux-ultra-1-1,flux-2-max")
        );
    }

    let (status, page) = app.page("/compare?models=flux-2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    page.assert_well_formed("one model");
    assert!(page.text("[data-testid=picker-error]").is_some_and(|t| t.contains("at least two")));
    assert_eq!(page.count("input[name=models][checked]"), 1);
    assert_eq!(page.count("table.feature-table"), 0);

    let five = "/compare?models=flux-2,flux-ultra-1-1,flux-2-max,flux-2-flex,flux-1-1-pro";
    let (status, page) = app.page(five).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.text("[data-testid=picker-error]").is_some_and(|t| t.contains("up to 4") && t.contains("5")));
    assert_eq!(page.count("input[name=models][checked]"), 5, "what was chosen is kept");

    let (status, page) = app.page("/compare?models=flux-2,midjourney-9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.text("[data-testid=picker-error]").is_some_and(|t| t.contains("midjourney-9")));
    assert_eq!(page.count("table.feature-table"), 0);
}

#[tokio::test]
async fn model_pages_show_cards_and_the_full_price_table() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page("/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.count(".model-card"), 20);
    assert_eq!(page.texts(".model-card h2").first().map(String::as_str), Some("Flux 2"));
    assert_eq!(page.texts("[data-testid=starting-price]")[..2], strings(&["22 credits", "16 credits"]));

    let (status, page) = app.page("/models/flux-2").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("/models/flux-2");
    let rows = page.texts("table.price-table tbody tr");
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0].starts_with("Standard default flux-2-pro") && rows[0].ends_with("22 credits 38 credits"),
        "{rows:?}"
    );
    assert!(rows[1].starts_with("Klein 9B flux-2-klein-9b") && rows[1].ends_with("16 credits 26 credits"), "{rows:?}");
    assert!(page.count("a[href=\"/compare/flux-2-vs-flux-ultra-1-1/portrait\"]") == 1);

    let (_, page) = app.page("/models/flux-ultra-1-1").await;
    let cells = page.texts("table.price-table tbody td");
    assert_eq!(cells, strings(&["16 credits", "—"]), "4k is not offered");
}

#[tokio::test]
async fn the_home_page_features_the_seed_comparison_with_its_images() {
    // The seed comparison, Flux 2 vs FLUX.2 [max] and the first cross-maker one: three pairs.
    let app = TestApp::spawn().await;
    let page = page_with_showcase_images(&app, "/", "[data-testid=featured-comparisons] img", 6).await;
    page.assert_well_formed("/");
    assert!(page.count(&format!("[data-testid=featured-comparisons] a[href=\"{SEED}\"]")) == 1);
    for src in page.attrs("[data-testid=featured-comparisons] img", "src") {
        assert_eq!(app.get(&src).await.status(), StatusCode::OK, "{src}");
    }
}

async fn table_counts(pool: &sqlx::PgPool) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in
        ["catalog_provider", "catalog_model", "model_variant", "variant_price", "use_case", "comparison_content"]
    {
        let sql =
            format!("SELECT count(*) FROM {table} WHERE {}", if table == "variant_price" { "true" } else { "active" });
        counts.push(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.expect("count"));
    }
    counts
}

#[tokio::test]
async fn loading_the_catalog_is_idempotent_and_bad_files_change_nothing() {
    let db = TestDb::create().await;
    let pool = db.pool(4);
    faceoff::db::migrate(&pool).await.expect("migrate");
    assert_eq!(catalog::db::load(&pool, CATALOG_TOML, "test").await.expect("load"), LoadOutcome::Loaded);
    let before = table_counts(&pool).await;
    assert_eq!(before, vec![11, 20, 22, 30, 5, 10]);
    let loaded = catalog::db::fetch(&pool).await.expect("fetch");
    assert_eq!(loaded.models(), catalog::file::parse(CATALOG_TOML).expect("parse").models());

    assert_eq!(catalog::db::load(&pool, CATALOG_TOML, "test").await.expect("load"), LoadOutcome::Unchanged);
    assert_eq!(table_counts(&pool).await, before);
    // Even rewriting the same content (a file that differs only in a comment) changes no facts.
    let commented = format!("# reviewed again\n{CATALOG_TOML}");
    assert_eq!(catalog::db::load(&pool, &commented, "test").await.expect("load"), LoadOutcome::Loaded);
    assert_eq!(table_counts(&pool).await, before);
    assert_eq!(catalog::db::fetch(&pool).await.expect("fetch").models(), loaded.models());

    // A bad file names the line and loads nothing.
    let broken = CATALOG_TOML.replacen("max_megapixels = 4.0", "max_megapixels = four", 1);
    let line = broken.lines().position(|l| l.contains("= four")).expect("line") + 1;
    let err = catalog::db::load(&pool, &broken, "test").await.expect_err("refused").to_string();
    assert!(err.contains(&format!("line {line}")), "{err}");
    let unknown = CATALOG_TOML.replacen("provider = \"bfl\"", "provider = \"acme\"", 1);
    let err = catalog::db::load(&pool, &unknown, "test").await.expect_err("refused").to_string();
    assert!(err.contains("model `flux-2`") && err.contains("unknown provider `acme`"), "{err}");
    assert_eq!(table_counts(&pool).await, before);

    // A model removed from the file is retired, not deleted.
    let start = CATALOG_TOML.find("[[models]]\nslug = \"flux-kontext-pro\"").expect("kontext");
    let end = CATALOG_TOML[start..].find("# ----").expect("section end") + start;
    let without = format!("{}{}", &CATALOG_TOML[..start], &CATALOG_TOML[end..]);
    assert_eq!(catalog::db::load(&pool, &without, "test").await.expect("load"), LoadOutcome::Loaded);
    let catalog = catalog::db::fetch(&pool).await.expect("fetch");
    assert!(catalog.model("flux-kontext-pro").is_none());
    let kept: bool = sqlx::query_scalar("SELECT active FROM catalog_model WHERE slug = 'flux-kontext-pro'")
        .fetch_one(&pool)
        .await
        .expect("row kept");
    assert!(!kept);
}

#[tokio::test]
async fn a_catalog_load_refreshes_running_instances() {
    let app = TestApp::spawn().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = app.state.catalog.spawn_listener(app.pool.clone(), shutdown.clone());
    let (_, page) = app.page("/models/flux-2").await;
    assert!(page.texts("table.price-table tbody tr")[0].ends_with("22 credits 38 credits"));

    // Wait until the listener is subscribed (it refreshes once when it starts listening).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let repriced =
        CATALOG_TOML.replacen("prices = { \"2k\" = 22, \"4k\" = 38 }", "prices = { \"2k\" = 23, \"4k\" = 38 }", 1);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&app.pool)
        .await
        .expect("activity");
        if listening > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "listener never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(catalog::db::load(&app.pool, &repriced, "test").await.expect("load"), LoadOutcome::Loaded);
    loop {
        if app.state.catalog.current().model("flux-2").and_then(|m| m.starting_price()) == Some(23) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the snapshot was not refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page) = app.page(SEED).await;
    let price = feature_rows(&page).into_iter().find(|(label, _)| label == "Starting Price").expect("row");
    assert_eq!(price.1, strings(&["23 credits", "16 credits"]));
    shutdown.cancel();
    listener.await.expect("listener stops");
}
