//! The comparison viewer (`GET /runs/{id}/compare`): its owner sees the images (web rendition
//! first, a link to each original, their sizes); anyone else gets 404; a blind run's viewer
//! names no model and shows no per-model size or model-naming address before the vote.

use reqwest::{StatusCode, multipart};
use uuid::Uuid;

use crate::{
    arena::{start_workers, vote},
    helpers::{Browser, TestApp, location, wait_until_settled},
};

/// Submits a run of `models` from the studio form (blind or not).
async fn studio_run(browser: &Browser, models: &[&str], blind: bool) -> Uuid {
    let (_, studio) = browser.page("/studio").await;
    let csrf = studio.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf");
    let key = studio.attr("input[name=idempotency_key]", "value").expect("key");
    let mut form = multipart::Form::new()
        .text("csrf_token", csrf)
        .text("idempotency_key", key)
        .text("prompt", "a candid portrait by a window")
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("seed", "7")
        .text("use_case", "portrait");
    if blind {
        form = form.text("blind", "on");
    }
    for m in models {
        form = form.text("models", m.to_string());
    }
    let response = browser.post_multipart("/runs", form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap_or_default());
    location(&response).strip_prefix("/runs/").and_then(|id| id.parse().ok()).expect("run id")
}

#[tokio::test]
async fn the_viewer_is_its_owners_alone() {
    let app = TestApp::spawn().await;
    app.signed_in_user(1_000).await;
    let _workers = start_workers(&app);
    let run_id = studio_run(&app.browser, &["flux-2", "flux-ultra-1-1", "flux-2-max"], false).await;
    let jobs = wait_until_settled(&app.pool, run_id).await;
    let path = format!("/runs/{run_id}/compare");

    let (status, page) = app.page(&path).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("the viewer");
    assert_eq!(page.count("[data-viewer] [data-pane]"), 3);
    let names: Vec<String> = jobs.iter().map(|j| j.choice().label()).collect();
    assert_eq!(page.texts("[data-pane] [data-role=label]"), names);
    // The web rendition first, the original behind a link and in data-original.
    let originals: Vec<String> = jobs.iter().map(|j| j.image_url().expect("image")).collect();
    assert_eq!(page.attrs("[data-pane] img", "data-original"), originals);
    assert_eq!(page.attrs("[data-testid=original-link]", "href"), originals);
    let thumbs: Vec<String> = jobs.iter().map(|j| j.thumb_url().expect("thumb")).collect();
    assert_eq!(page.attrs("[data-pane] img", "src"), thumbs);
    assert!(thumbs.iter().zip(&originals).all(|(t, o)| t != o), "the rendition is not the original");
    let sizes: Vec<String> = jobs
        .iter()
        .map(|j| format!("{} × {} px", j.image_width.expect("width"), j.image_height.expect("height")))
        .collect();
    assert_eq!(page.texts("[data-role=dimensions]"), sizes);
    for width in page.attrs("[data-pane] img", "data-rendition-width") {
        assert!(width.parse::<i32>().is_ok_and(|w| w > 0 && w <= 512), "rendition width {width}");
    }
    // The run page links to it.
    let (_, run_page) = app.page(&format!("/runs/{run_id}")).await;
    assert_eq!(run_page.attr("[data-testid=compare-link]", "href"), Some(path.clone()));

    // Someone else: 404, and nothing of the run in the answer.
    let stranger = app.browser();
    stranger.sign_up("stranger@example.com", "a long and happy password").await;
    let (status, page) = stranger.page(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!page.source.contains("candid portrait") && !page.source.contains("/media/"));
    // Signed out: never the page.
    let anonymous = Browser::new(app.addr);
    let response = anonymous.get(&path).await;
    assert_ne!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap_or_default();
    assert!(!body.contains("/media/"));
    // A run that does not exist, or not a run id at all: 404.
    let (status, _) = app.page(&format!("/runs/{}/compare", Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.page("/runs/not-a-run/compare").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_blind_runs_viewer_names_no_model_before_the_vote() {
    let app = TestApp::spawn().await;
    app.signed_in_user(1_000).await;
    let run_id = studio_run(&app.browser, &["flux-2", "flux-ultra-1-1"], true).await;
    let path = format!("/runs/{run_id}/compare");
    let jobs = faceoff::jobs::for_run(&app.pool, run_id).await.expect("jobs");
    let secrets: Vec<String> = jobs
        .iter()
        .flat_map(|j| [j.model_slug.clone(), j.model_name.clone(), j.job_id.to_string(), j.variant_slug.clone()])
        .chain(["Flux".into(), "flux".into(), "/media/".into(), "data-width".into(), "data-role=\"dimensions\"".into()])
        .collect();
    let assert_blind = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} gives {secret:?} away:\n{text}");
        }
    };

    // Pending: no images yet, and nothing named.
    let (status, page) = app.page(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_blind("the pending viewer", &page.source);
    assert_eq!(page.count("[data-pane]"), 0);

    let _workers = start_workers(&app);
    wait_until_settled(&app.pool, run_id).await;
    let (status, page) = app.page(&path).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("the blind viewer");
    assert_blind("the blind viewer", &page.source);
    assert_eq!(page.texts("[data-pane] [data-role=label]"), vec!["Model A", "Model B"]);
    let neutral = vec![format!("/runs/{run_id}/blind/a"), format!("/runs/{run_id}/blind/b")];
    assert_eq!(page.attrs("[data-pane] img", "src"), neutral);
    assert_eq!(page.attrs("[data-pane] img", "data-original"), neutral);
    assert_eq!(page.attrs("[data-testid=original-link]", "href"), neutral);
    assert!(page.attrs("[data-pane] img", "width").is_empty(), "no sizes");

    // After the vote: the names, the originals and their sizes.
    let response = vote(&app.browser, run_id, "A").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, page) = app.page(&path).await;
    assert!(page.source.contains("Flux"), "names after the vote");
    assert_eq!(
        page.attrs("[data-testid=original-link]", "href").iter().filter(|h| h.starts_with("/media/")).count(),
        2
    );
    assert_eq!(page.count("[data-role=dimensions]"), 2);
}

#[tokio::test]
async fn a_comparisons_showcase_opens_in_the_viewer_with_its_originals() {
    let app = TestApp::spawn().await;
    let look = "/compare/flux-2-vs-flux-ultra-1-1/portrait/look";
    // The showcase images are generated on the first visit: wait for both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let page = loop {
        let (status, page) = app.page(look).await;
        assert_eq!(status, StatusCode::OK);
        if page.count("[data-pane]") == 2 {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "the showcase images never arrived");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    page.assert_well_formed("the showcase viewer");
    assert_eq!(page.texts("[data-pane] [data-role=label]"), vec!["Flux 2", "Flux Ultra 1.1"]);
    let renditions = page.attrs("[data-pane] img", "src");
    let originals = page.attrs("[data-testid=original-link]", "href");
    assert_eq!(page.attrs("[data-pane] img", "data-original"), originals);
    for (rendition, original) in renditions.iter().zip(&originals) {
        assert!(rendition.ends_with("/w800.jpg"), "{rendition}");
        assert!(original.contains("/original."), "{original}");
        assert_eq!(app.get(original).await.status(), StatusCode::OK, "a public original");
    }
    assert_eq!(page.count("[data-role=dimensions]"), 2);
    // The comparison page links to it; the other order of the pair redirects to it.
    let (_, comparison) = app.page("/compare/flux-2-vs-flux-ultra-1-1/portrait").await;
    assert_eq!(comparison.attr("[data-testid=look-link]", "href").as_deref(), Some(look));
    let (_, general) = app.page("/compare/flux-2-vs-flux-ultra-1-1").await;
    assert!(general.attr("[data-testid=look-link]", "href").is_some_and(|h| h.ends_with("/look")));
    let response = app.browser.get("/compare/flux-ultra-1-1-vs-flux-2/portrait/look").await;
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(location(&response), look);
    let (status, _) = app.page("/compare/flux-2-vs-flux-ultra-1-1/no-such-use-case/look").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
