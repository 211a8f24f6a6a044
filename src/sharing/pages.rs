//! Sharing over HTTP: the owner's publish and unpublish buttons (`POST /runs/{id}/publish`,
//! `POST /runs/{id}/unpublish`), the public page of a published run (`GET /s/{share_id}`) with
//! its images (`/s/{share_id}/images/{n}`, thumbnails at `/s/{share_id}/thumbs/{n}`), social
//! card (`/s/{share_id}/card.png`) and ZIP (`/s/{share_id}/download.zip`), the owner's ZIP
//! (`GET /runs/{id}/download.zip`), reports (`POST /s/{share_id}/report`) and the
//! administrators' hide and dismiss buttons.
//!
//! Caching: everything under `/s/` is looked up in the database on every request (404 at once
//! after an unpublish or a hide) and sent with `Cache-Control: public, max-age=…`
//! ([`super::PUBLIC_PAGE_MAX_AGE`] for the page seen signed out, [`super::PUBLIC_IMAGE_MAX_AGE`]
//! for images, card and ZIP): the time a browser or CDN may go on showing a copy. The page seen
//! signed in (its header has the balance) and the owner's ZIP stay private.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{Share, card, download};
use crate::{
    arena,
    catalog::Catalog,
    jobs::{self, Job},
    runs::{self, Run, RunView},
    state::AppState,
    storage,
    web::{Admin, AppError, CsrfForm, Layout, Result, Routes, SignedIn, Viewer, render},
};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/runs/{id}/publish", post(publish))
        .route("/runs/{id}/unpublish", post(unpublish))
        .route("/runs/{id}/download.zip", get(owner_download))
        .route("/s/{share_id}", get(share_page))
        .route("/s/{share_id}/images/{n}", get(share_image))
        .route("/s/{share_id}/thumbs/{n}", get(share_thumb))
        .route("/s/{share_id}/card.png", get(share_card))
        .route("/s/{share_id}/download.zip", get(share_download))
        .route("/s/{share_id}/report", post(report))
        .route("/admin/shares/{share_id}/hide", post(admin_hide))
        .route("/admin/reports/{report_id}/dismiss", post(admin_dismiss))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Empty {}

fn public(max_age: u32) -> HeaderValue {
    HeaderValue::from_str(&format!("public, max-age={max_age}")).unwrap_or(HeaderValue::from_static("no-store"))
}

async fn owned_run(state: &AppState, user_id: Uuid, raw_id: &str) -> Result<Run> {
    let run_id = AppError::parse_id(raw_id, "run")?;
    runs::find_owned(&state.pool, run_id, user_id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that run".into()))
}

fn share_gone() -> AppError {
    AppError::NotFound("this shared run does not exist or is no longer shared".into())
}

async fn live_share(state: &AppState, share_id: &str) -> Result<Share> {
    super::find_live(&state.pool, share_id).await?.ok_or_else(share_gone)
}

impl From<super::PublishError> for AppError {
    fn from(err: super::PublishError) -> Self {
        match err {
            super::PublishError::Db(err) => AppError::Internal(err.into()),
            other => AppError::Conflict(other.to_string()),
        }
    }
}

/// `POST /runs/{id}/publish`: publishes (or keeps published) the owner's run; back to its page.
async fn publish(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    let jobs = jobs::for_run(&state.pool, run.run_id).await?;
    let voted = arena::votes::of_run(&state.pool, &run).await?.is_some();
    let share = super::publish(&state.pool, &run, &jobs, voted).await?;
    if share.card_key.is_none() {
        // The card is ready before the first link preview asks for it (or made then).
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = stored_card(&state, &share).await {
                tracing::warn!("rendering a social card: {err:#}");
            }
        });
    }
    Ok(Redirect::to(&format!("/runs/{}", run.run_id)).into_response())
}

/// `POST /runs/{id}/unpublish`: the public address answers 404 from now on.
async fn unpublish(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    super::unpublish(&state.pool, run.run_id).await?;
    Ok(Redirect::to(&format!("/runs/{}", run.run_id)).into_response())
}

/// One image of the public page.
pub struct PublicImage {
    pub name: String,
    pub url: String,
    pub thumb_url: String,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub price: Option<i64>,
    pub duration: Option<String>,
    pub sandbox: bool,
}

#[derive(askama::Template)]
#[template(path = "sharing/share.html")]
pub struct SharePage {
    pub layout: Layout,
    pub share_id: String,
    pub run: RunView,
    pub images: Vec<PublicImage>,
    pub use_case_name: Option<String>,
    pub vote: Option<String>,
    pub sandbox: bool,
    pub try_href: String,
    pub title: String,
    pub description: String,
    pub canonical: String,
    pub card_url: String,
    pub card_width: u32,
    pub card_height: u32,
    /// The viewer's own run (they see a link back to it).
    pub own: bool,
    pub signed_in: bool,
}

/// The public view of a run's images, with the public addresses.
fn public_images(share: &Share, view: &RunView, shown: &[&Job]) -> Vec<PublicImage> {
    shown
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let v = view.jobs.iter().find(|j| j.id == job.job_id);
            PublicImage {
                name: job.choice().label(),
                url: format!("/s/{}/images/{}", share.share_id, i + 1),
                thumb_url: format!("/s/{}/thumbs/{}", share.share_id, i + 1),
                width: job.image_width,
                height: job.image_height,
                price: job.charged.filter(|c| *c > 0).or(Some(job.price)),
                duration: v.and_then(|v| v.duration_label.clone()),
                sandbox: super::is_sandbox(job),
            }
        })
        .collect()
}

/// "The owner voted blind: Flux 2 was the best." for a voted run.
fn vote_sentence(catalog: &Catalog, vote: &arena::votes::Vote) -> String {
    let how = if vote.blind { "voted blind, before seeing the names" } else { "voted" };
    match (vote.choice.as_str(), vote.winner) {
        ("best", Some(w)) => {
            let name = vote.entries.get(w as usize).map(|e| arena::board::describe(catalog, e).0).unwrap_or_default();
            format!("The person who ran this {how}: {name} was the best.")
        }
        ("tie", _) => format!("The person who ran this {how}: a tie."),
        _ => format!("The person who ran this {how}: none was good enough."),
    }
}

/// `GET /s/{share_id}`: the published run, for anyone.
async fn share_page(
    State(state): State<AppState>,
    viewer: Viewer,
    layout: Layout,
    Path(share_id): Path<String>,
) -> Result<Response> {
    let share = live_share(&state, &share_id).await?;
    let run = runs::find(&state.pool, share.run_id).await?.ok_or_else(share_gone)?;
    let jobs = jobs::for_run(&state.pool, run.run_id).await?;
    let view = RunView::build(&run, &jobs);
    let shown = super::public_jobs(&run, &jobs);
    let images = public_images(&share, &view, &shown);
    let catalog = state.catalog.current();
    let vote = arena::votes::of_run(&state.pool, &run).await?.map(|v| vote_sentence(&catalog, &v));
    let names: Vec<String> = images.iter().map(|i| i.name.clone()).collect();
    let models: Vec<String> = shown.iter().map(|j| j.choice().value()).collect();
    let prompt_param: String = url::form_urlencoded::byte_serialize(run.prompt.as_bytes()).collect();
    let try_href = format!(
        "/studio?models={}&mode={}&aspect_ratio={}&prompt={prompt_param}",
        models.join(","),
        run.mode.as_str(),
        run.aspect_ratio
    );
    let try_href = if layout.is_signed_in() { try_href } else { format!("/signup?next={}", urlencode(&try_href)) };
    let title = format!("{} — same prompt, side by side", names.join(" vs "));
    let mut description: String = run.prompt.chars().take(150).collect();
    if run.prompt.chars().count() > 150 {
        description.push('…');
    }
    let signed_in = viewer.user().is_some();
    let own = viewer.user().is_some_and(|u| u.id == run.user_id);
    let page = SharePage {
        share_id: share.share_id.clone(),
        use_case_name: runs::pages::use_case_name(&catalog, run.use_case.as_deref()),
        sandbox: share.sandbox,
        canonical: state.config.absolute_url(&share.path()),
        card_url: state.config.absolute_url(&format!("{}/card.png", share.path())),
        card_width: card::WIDTH,
        card_height: card::HEIGHT,
        layout,
        run: view,
        images,
        vote,
        try_href,
        title,
        description,
        own,
        signed_in,
    };
    let mut response = render(&page);
    if !signed_in {
        response.headers_mut().insert(header::CACHE_CONTROL, public(super::PUBLIC_PAGE_MAX_AGE));
    }
    Ok(response)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The `n`-th (from 1) image of a live publication: its job.
async fn nth_job(state: &AppState, share_id: &str, n: &str) -> Result<(Share, Job)> {
    let n: usize = n.parse().ok().filter(|n| (1..=4).contains(n)).ok_or_else(share_gone)?;
    let share = live_share(state, share_id).await?;
    let run = runs::find(&state.pool, share.run_id).await?.ok_or_else(share_gone)?;
    let jobs = jobs::for_run(&state.pool, run.run_id).await?;
    let job = super::public_jobs(&run, &jobs).get(n - 1).map(|j| (*j).clone()).ok_or_else(share_gone)?;
    Ok((share, job))
}

/// A stored object sent as a public, cacheable image.
async fn public_object(state: &AppState, key: &str) -> Result<Response> {
    let media = storage::find(&state.pool, key).await?.ok_or_else(share_gone)?;
    let bytes = state.store.get(key).await?.ok_or_else(share_gone)?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CACHE_CONTROL, public(super::PUBLIC_IMAGE_MAX_AGE));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("inline"));
    Ok(response)
}

/// `GET /s/{share_id}/images/{n}`: the original of the n-th image.
async fn share_image(State(state): State<AppState>, Path((share_id, n)): Path<(String, String)>) -> Result<Response> {
    let (_, job) = nth_job(&state, &share_id, &n).await?;
    let key = job.image_key.ok_or_else(share_gone)?;
    public_object(&state, &key).await
}

/// `GET /s/{share_id}/thumbs/{n}`: the n-th image's thumbnail (the original when it has none).
async fn share_thumb(State(state): State<AppState>, Path((share_id, n)): Path<(String, String)>) -> Result<Response> {
    let (_, job) = nth_job(&state, &share_id, &n).await?;
    let key = job.thumb_key.or(job.image_key).ok_or_else(share_gone)?;
    public_object(&state, &key).await
}

/// The run's stored card: rendered now (and stored) when it has none yet.
async fn stored_card(state: &AppState, share: &Share) -> anyhow::Result<String> {
    if let Some(key) = &share.card_key {
        return Ok(key.clone());
    }
    let run = runs::find(&state.pool, share.run_id).await?.ok_or_else(|| anyhow::anyhow!("run gone"))?;
    let jobs = jobs::for_run(&state.pool, run.run_id).await?;
    let mut tiles = Vec::new();
    for job in super::public_jobs(&run, &jobs).into_iter().take(4) {
        let Some(key) = &job.image_key else { continue };
        let bytes = state.store.get(key).await?.ok_or_else(|| anyhow::anyhow!("{key} is not stored"))?;
        tiles.push(card::Tile { bytes, label: job.choice().label() });
    }
    let sandbox = share.sandbox;
    let png = storage::images::run(move || card::render(tiles, sandbox)).await??;
    let key = format!("cards/run-{}.png", run.run_id);
    // Recorded while the owner and the run are locked (in the order account deletion takes
    // them: the user first), so a deletion running meanwhile either waits for this row and
    // deletes it with the user's media, or goes first and this gives up; an object left
    // without its row is removed by the orphan sweep.
    let mut tx = crate::db::begin(&state.pool).await?;
    let owner: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM app_user WHERE user_id = $1 AND deleted_at IS NULL FOR KEY SHARE")
            .bind(run.user_id)
            .fetch_optional(&mut *tx)
            .await?;
    let alive: Option<i32> = sqlx::query_scalar("SELECT 1 FROM generation_run WHERE run_id = $1 FOR SHARE")
        .bind(run.run_id)
        .fetch_optional(&mut *tx)
        .await?;
    anyhow::ensure!(owner.is_some() && alive.is_some(), "the run was deleted");
    let size = png.len();
    state.store.put(&key, png).await?;
    storage::record(&mut *tx, &key, "image/png", size, Some((card::WIDTH, card::HEIGHT)), Some(run.user_id)).await?;
    super::set_card(&mut *tx, run.run_id, &key).await?;
    tx.commit().await?;
    Ok(key)
}

/// `GET /s/{share_id}/card.png`: the social card (1200×630 PNG).
async fn share_card(State(state): State<AppState>, Path(share_id): Path<String>) -> Result<Response> {
    let share = live_share(&state, &share_id).await?;
    let key = stored_card(&state, &share).await?;
    public_object(&state, &key).await
}

/// The ZIP of a run's delivered images (in display order) and its `prompt.txt`.
async fn zip_response(state: &AppState, run: &Run, jobs: &[Job], stem: &str, cache: HeaderValue) -> Result<Response> {
    let shown = super::public_jobs(run, jobs);
    let mut entries = Vec::new();
    let mut total = 0i64;
    let mut lines = Vec::new();
    for (i, job) in shown.iter().enumerate() {
        let Some(key) = &job.image_key else { continue };
        let media = storage::find(&state.pool, key).await?.ok_or_else(AppError::not_found)?;
        total += media.byte_size;
        let name = download::entry_name(i, &job.choice().value(), &media.content_type);
        let mut line = format!("{name}: {}", job.choice().label());
        if let (Some(w), Some(h)) = (job.image_width, job.image_height) {
            line.push_str(&format!(", {w}×{h}"));
        }
        if let Some(d) = job.duration() {
            line.push_str(&format!(", took {}", runs::duration_label(d)));
        }
        if super::is_sandbox(job) {
            line.push_str(", sandbox rendering (not the real model)");
        }
        lines.push(line);
        entries.push(download::Entry { name, key: key.clone() });
    }
    if entries.is_empty() {
        return Err(AppError::NotFound("this run has no image to download".into()));
    }
    if total > download::MAX_TOTAL_BYTES {
        return Err(AppError::TooLarge("this run's images are too large to download as one file".into()));
    }
    let catalog = state.catalog.current();
    let mut text = format!("Prompt:\n{}\n\n", run.prompt);
    text.push_str(&format!("Resolution: {}\n", run.mode.label()));
    text.push_str(&format!("Aspect ratio: {}\n", run.aspect_ratio));
    text.push_str(&format!("Seed: {}\n", run.seed));
    if let Some(uc) = runs::pages::use_case_name(&catalog, run.use_case.as_deref()) {
        text.push_str(&format!("Use case: {uc}\n"));
    }
    text.push_str(&format!(
        "Created: {}\n\nImages:\n{}\n",
        run.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        lines.join("\n")
    ));
    let permit = download::try_permit().ok_or_else(|| AppError::Busy {
        message: "too many downloads are running; try again in a few seconds".into(),
        retry_after: 10,
    })?;
    let body = Body::from_stream(download::stream(state.store.clone(), entries, text, permit));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    let filename = format!("attachment; filename=\"faceoff-{stem}.zip\"");
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&filename).unwrap_or(HeaderValue::from_static("attachment")),
    );
    headers.insert(header::CACHE_CONTROL, cache);
    Ok(response)
}

/// `GET /runs/{id}/download.zip`: the owner's originals (once a blind run's names are shown).
async fn owner_download(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(id): Path<String>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    let jobs = jobs::for_run(&state.pool, run.run_id).await?;
    let voted = arena::votes::of_run(&state.pool, &run).await?.is_some();
    if run.blind && !voted && run.revealed_at.is_none() {
        return Err(AppError::Conflict("vote or show the names first: the file names say which model is which".into()));
    }
    let stem = run.run_id.to_string();
    zip_response(&state, &run, &jobs, &stem, HeaderValue::from_static("private, no-store")).await
}

/// `GET /s/{share_id}/download.zip`: a published run's originals, for anyone.
async fn share_download(State(state): State<AppState>, Path(share_id): Path<String>) -> Result<Response> {
    let share = live_share(&state, &share_id).await?;
    let run = runs::find(&state.pool, share.run_id).await?.ok_or_else(share_gone)?;
    let jobs = jobs::for_run(&state.pool, run.run_id).await?;
    // Named after the share id: the public ZIP says nothing the page does not.
    zip_response(&state, &run, &jobs, &share.share_id, public(super::PUBLIC_IMAGE_MAX_AGE)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReportForm {
    reason: String,
}

/// `POST /s/{share_id}/report`: a signed-in user reports a published run.
async fn report(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(share_id): Path<String>,
    CsrfForm(form): CsrfForm<ReportForm>,
) -> Result<Response> {
    let share = live_share(&state, &share_id).await?;
    match super::report(&state.pool, &share, user.id, &form.reason).await {
        Ok(()) | Err(super::ReportError::AlreadyReported) => {
            Ok(Redirect::to(&format!("{}?reported=1", share.path())).into_response())
        }
        Err(err @ super::ReportError::InvalidReason) => Err(AppError::Unprocessable(err.to_string())),
        Err(super::ReportError::TooMany) => Err(AppError::RateLimited { retry_after: 3600 }),
        Err(super::ReportError::Db(err)) => Err(AppError::Internal(err.into())),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HideForm {
    reason: String,
}

/// `POST /admin/shares/{share_id}/hide`: an administrator takes a published run down.
async fn admin_hide(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(share_id): Path<String>,
    CsrfForm(form): CsrfForm<HideForm>,
) -> Result<Response> {
    if !super::hide(&state.pool, &share_id, admin.id, &form.reason).await? {
        return Err(AppError::NotFound("that run is not published (any more)".into()));
    }
    Ok(Redirect::to("/admin?notice=hidden").into_response())
}

/// `POST /admin/reports/{report_id}/dismiss`: the report is dealt with, the run stays.
async fn admin_dismiss(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(report_id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response> {
    let id: i64 = report_id.parse().map_err(|_| AppError::NotFound("we could not find that report".into()))?;
    if !super::dismiss_report(&state.pool, id).await? {
        return Err(AppError::NotFound("we could not find that report".into()));
    }
    Ok(Redirect::to("/admin?notice=dismissed").into_response())
}
