//! The pages people land on: the comparison page's picker (a GET form to the 3- or 4-model
//! comparison), the home page's blocks (present with data, absent without), a model page's
//! work, standings and comparisons by maker, and the use-case pages (also in the sitemap).

use reqwest::StatusCode;

use crate::helpers::TestApp;

const SEED: &str = "/compare/flux-2-vs-flux-ultra-1-1/portrait";

/// A snapshot of `board` ranking `models` in order (each with `votes`), as the recompute writes it.
async fn ranked_snapshot(app: &TestApp, board: &str, models: &[(&str, &str)], votes: i64) {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO arena_snapshot (board, last_vote_id, counted_votes, excluded_votes, bootstrap)
         VALUES ($1, 0, $2, 0, 200) RETURNING snapshot_id",
    )
    .bind(board)
    .bind(votes)
    .fetch_one(&app.pool)
    .await
    .expect("snapshot");
    for (i, (slug, name)) in models.iter().enumerate() {
        let rating = 1100.0 - 50.0 * i as f64;
        sqlx::query(
            "INSERT INTO arena_snapshot_entry (snapshot_id, entry, name, rating, rating_lo, rating_hi, rank,
                 provisional, votes, win_rate, expected_win_rate, price, timed_jobs)
             VALUES ($1, $2, $3, $4, $4 - 10, $4 + 10, $5, false, $6, 0.5, 0.5, 20, 0)",
        )
        .bind(id)
        .bind(format!("{slug}:standard"))
        .bind(name)
        .bind(rating)
        .bind(i as i32 + 1)
        .bind(votes)
        .execute(&app.pool)
        .await
        .expect("entry");
    }
}

#[tokio::test]
async fn the_comparison_page_picker_leads_to_the_three_model_comparison_without_javascript() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page(SEED).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed(SEED);
    let form = "form[data-testid=compare-picker]";
    assert_eq!(page.attr(form, "method").as_deref(), Some("get"));
    assert_eq!(page.attr(form, "action").as_deref(), Some("/compare"));
    assert_eq!(page.attr(form, "data-max").as_deref(), Some("4"));
    let checked = page.attrs(&format!("{form} input[name=models][checked]"), "value");
    assert_eq!(checked, vec!["flux-2".to_string(), "flux-ultra-1-1".to_string()], "the pair is preselected");
    assert!(page.count(&format!("{form} input[name=models]")) >= 10, "the catalog's models to add");
    let summary = page.text(&format!("{form} summary")).expect("summary");
    assert!(summary.contains("Compare models") && summary.contains("2/4 selected"), "{summary}");
    // The picker sits near the top: inside the page's header, before the showcase.
    assert_eq!(page.count(&format!("header {form}")), 1);

    // Submitting it with a third model ticked (what a browser sends without JavaScript).
    let (status, page) = app.page("/compare?models=flux-2&models=flux-ultra-1-1&models=gpt-image-1").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("three-model comparison");
    assert_eq!(page.count("table.feature-table thead th[scope=col] a"), 3, "three models side by side");
    // A fifth model is refused with an explanation.
    let (status, _) = app
        .page("/compare?models=flux-2&models=flux-ultra-1-1&models=gpt-image-1&models=flux-2-max&models=nano-banana")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_home_page_shows_the_field_and_leaves_out_blocks_without_data() {
    let app = TestApp::spawn().await;
    let catalog = app.state.catalog.current();
    let (status, page) = app.page("/").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("/");
    // Makers and their models, one showcase image (or its placeholder) each.
    assert_eq!(page.count("[data-testid=home-field] section.maker"), catalog.model_count_by_maker().len());
    assert_eq!(page.count("[data-testid=home-field] figure.result"), catalog.models().len());
    assert_eq!(page.count("[data-testid=home-field] a[href=\"/models/gpt-image-1\"]"), 1);
    assert_eq!(page.count("[data-testid=home-field] img:not([width])"), 0);
    // Comparisons grouped by use case, each group leading to its use-case page.
    assert!(page.count("[data-testid=home-use-cases] a[href=\"/use-cases/portrait\"]") == 1);
    assert!(page.count(&format!("[data-testid=home-use-cases] a[href=\"{SEED}\"]")) == 1);
    // No votes yet: no leaderboard block at all (not an empty frame).
    assert_eq!(page.count("[data-testid=home-leaders]"), 0);
    assert!(!page.source.contains("Leading in blind votes"));
    // Nothing shared yet: no shared-runs block either.
    assert_eq!(page.count("[data-testid=home-shared]"), 0);

    ranked_snapshot(&app, "portrait", &[("flux-ultra-1-1", "Flux Ultra 1.1"), ("flux-2", "Flux 2")], 120).await;
    // The demo board never shows here.
    ranked_snapshot(&app, "demo", &[("gpt-image-1", "GPT Image 1")], 500).await;
    let (_, page) = app.page("/").await;
    page.assert_well_formed("/ with leaders");
    assert_eq!(page.count("[data-testid=home-leaders] .card"), 1);
    assert_eq!(
        page.attrs("[data-testid=home-leaders] ol.leaders a", "href"),
        vec!["/models/flux-ultra-1-1".to_string(), "/models/flux-2".to_string()]
    );
    assert_eq!(page.count("[data-testid=home-leaders] a[href=\"/leaderboard/portrait\"]"), 1);
}

#[tokio::test]
async fn a_model_page_shows_its_work_standings_picker_and_comparisons_by_maker() {
    let app = TestApp::spawn().await;
    let catalog = app.state.catalog.current();
    let (status, page) = app.page("/models/flux-2").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("/models/flux-2");
    assert_eq!(page.count("[data-testid=model-work] figure.result"), catalog.use_cases().len());
    assert_eq!(page.count("[data-testid=model-work] a[href=\"/use-cases/typography\"]"), 1);
    assert_eq!(page.count("[data-testid=model-standings]"), 0, "not ranked anywhere yet");
    let makers = page.texts("[data-testid=model-comparisons] h3");
    assert!(makers.contains(&"Black Forest Labs".to_string()) && makers.contains(&"OpenAI".to_string()), "{makers:?}");
    assert_eq!(page.count("[data-testid=model-comparisons] a[href=\"/compare/flux-2-vs-flux-ultra-1-1\"]"), 1);
    assert_eq!(page.attrs("form[data-testid=compare-picker] input[checked]", "value"), vec!["flux-2".to_string()]);

    ranked_snapshot(&app, "portrait", &[("flux-ultra-1-1", "Flux Ultra 1.1"), ("flux-2", "Flux 2")], 120).await;
    let (_, page) = app.page("/models/flux-2").await;
    let standing = page.text("[data-testid=model-standings] li").expect("standing");
    assert!(standing.contains("Portrait") && standing.contains("rank 2"), "{standing}");
}

#[tokio::test]
async fn use_case_pages_show_needs_picks_pairs_and_every_model_and_are_in_the_sitemap() {
    let app = TestApp::spawn().await;
    let catalog = app.state.catalog.current();
    let sitemap = app.get("/sitemap.xml").await.text().await.expect("sitemap");
    for u in catalog.use_cases() {
        let path = format!("/use-cases/{}", u.slug);
        assert!(sitemap.contains(&format!("<loc>http://127.0.0.1:3000{path}</loc>")), "{path} not in the sitemap");
        let (status, page) = app.page(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        page.assert_well_formed(&path);
        assert_eq!(page.count("[data-testid=use-case-grid] figure.result"), catalog.models().len(), "{path}");
        assert!(page.text("[data-testid=use-case-needs]").is_some_and(|t| !t.is_empty()), "{path}");
    }
    let (_, page) = app.page("/use-cases/portrait").await;
    assert!(page.count(&format!("[data-testid=use-case-pairs] a[href=\"{SEED}\"]")) == 1);
    assert!(
        page.count("[data-testid=use-case-picks] a[href=\"/models/flux-2\"]") == 1,
        "editorial picks without votes"
    );
    assert_eq!(page.count("[data-testid=use-case-leaders]"), 0);
    assert!(page.source.contains("\"ItemList\""), "structured data lists the models");

    ranked_snapshot(&app, "portrait", &[("flux-ultra-1-1", "Flux Ultra 1.1"), ("flux-2", "Flux 2")], 120).await;
    let (_, page) = app.page("/use-cases/portrait").await;
    assert_eq!(page.count("[data-testid=use-case-picks]"), 0);
    assert_eq!(
        page.attrs("[data-testid=use-case-leaders] ol a", "href"),
        vec!["/models/flux-ultra-1-1".to_string(), "/models/flux-2".to_string()]
    );

    let (status, _) = app.page("/use-cases/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
