//! The studio (`GET /studio`, `POST /runs`), the run page with its live stream
//! (`GET /runs/{id}`, `GET /runs/{id}/events`) and the history (`GET /runs`).

use std::convert::Infallible;

use axum::{
    extract::{DefaultBodyLimit, Path, RawQuery, State},
    http::StatusCode,
    response::{
        IntoResponse, Redirect, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::{
    Run, RunView,
    create::{self, CreateError, FieldErrors, RunInput},
    events::RunSignal,
};
use crate::{
    accounts, arena,
    catalog::{Catalog, Mode},
    jobs::JobStatus,
    state::AppState,
    web::{
        AppError, CsrfMultipart, Layout, Result, Routes, SignedIn,
        csrf::{FromMultipart, MultipartFields},
        render,
        viewer::ViewerImage,
    },
};

/// The studio form's body limit: a 10 MB reference image plus the other fields.
pub const RUN_FORM_LIMIT: usize = 11 * 1024 * 1024;
pub const HISTORY_PAGE_SIZE: i64 = 12;

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/studio", get(studio))
        .route("/runs", get(history).post(submit).layer(DefaultBodyLimit::max(RUN_FORM_LIMIT)))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/compare", get(compare_page))
}

/// One model variant checkbox of the studio.
pub struct ModelOption {
    pub value: String,
    pub label: String,
    pub provider: String,
    pub checked: bool,
    pub price_2k: String,
    pub price_4k: String,
    pub ratios: String,
    pub i2i: bool,
    /// Billed by usage: the price is a ceiling ("up to N credits").
    pub up_to: bool,
}

pub struct QuoteLine {
    pub name: String,
    pub price: i64,
}

#[derive(askama::Template)]
#[template(path = "runs/studio.html")]
pub struct StudioPage {
    pub layout: Layout,
    pub options: Vec<ModelOption>,
    pub mode: String,
    pub four_k_available: bool,
    pub ratios: Vec<String>,
    pub aspect_ratio: String,
    pub prompt: String,
    pub seed: String,
    pub show_reference: bool,
    pub idempotency_key: String,
    pub errors: FieldErrors,
    pub form_error: Option<String>,
    /// The run an earlier submission of this form made (shown with a key conflict).
    pub earlier_run: Option<String>,
    pub lines: Vec<QuoteLine>,
    pub total: i64,
    pub available: i64,
    pub missing: i64,
    pub max_prompt: usize,
    /// The current wait for a new run ("About 40 s before a run you start now begins").
    pub wait: Option<String>,
    /// (slug, name) of the catalog's use cases, then `other`.
    pub use_cases: Vec<(String, String)>,
    pub use_case: String,
    pub blind: bool,
}

impl StudioPage {
    fn build(layout: Layout, catalog: &Catalog, input: &RunInput, errors: FieldErrors) -> StudioPage {
        let mut ignored = FieldErrors::default();
        let chosen = create::resolve_models(catalog, &input.models, &mut ignored);
        let chosen_values: Vec<String> = chosen.iter().map(|(m, v)| m.choice(v).value()).collect();
        let mut options = Vec::new();
        for model in catalog.offered_models() {
            for variant in &model.variants {
                let choice = model.choice(variant);
                let value = choice.value();
                options.push(ModelOption {
                    checked: chosen_values.contains(&value),
                    value,
                    label: choice.label(),
                    provider: model.provider_name.clone(),
                    price_2k: variant.price(Mode::TwoK).map(|p| p.to_string()).unwrap_or_default(),
                    price_4k: variant.price(Mode::FourK).map(|p| p.to_string()).unwrap_or_default(),
                    ratios: model.aspect_ratios.join(","),
                    i2i: model.image_to_image,
                    up_to: model.is_usage_billed(),
                });
            }
        }
        let mode = Mode::parse(input.mode.trim()).unwrap_or(Mode::TwoK);
        let ratios = create::common_aspect_ratios(catalog, &chosen);
        let aspect_ratio = if ratios.iter().any(|r| r == input.aspect_ratio.trim()) {
            input.aspect_ratio.trim().to_string()
        } else {
            ratios.first().cloned().unwrap_or_else(|| "1:1".into())
        };
        let lines: Vec<QuoteLine> = chosen
            .iter()
            .filter_map(|(m, v)| v.price(mode).map(|price| QuoteLine { name: m.choice(v).label(), price }))
            .collect();
        let total = lines.iter().map(|l| l.price).sum();
        let available = layout.available();
        StudioPage {
            four_k_available: chosen.is_empty() || chosen.iter().all(|(_, v)| v.price(Mode::FourK).is_some()),
            show_reference: !chosen.is_empty() && chosen.iter().all(|(m, _)| m.image_to_image),
            layout,
            options,
            mode: mode.as_str().to_string(),
            ratios,
            aspect_ratio,
            prompt: input.prompt.clone(),
            seed: input.seed.clone(),
            idempotency_key: create::new_idempotency_key(),
            errors,
            form_error: None,
            earlier_run: None,
            lines,
            total,
            available,
            missing: (total - available).max(0),
            max_prompt: create::MAX_PROMPT_CHARS,
            wait: None,
            use_cases: use_case_options(catalog),
            use_case: input.use_case.trim().to_string(),
            blind: input.blind,
        }
    }

    /// Adds the current wait for a new studio run of `user_id` (left out when it cannot be read).
    async fn with_wait(mut self, pool: &sqlx::PgPool, user_id: Uuid) -> Self {
        let wait = async {
            let mut conn = pool.acquire().await?;
            crate::jobs::queue::studio_wait(&mut conn, user_id).await
        }
        .await;
        match wait {
            Ok(wait) => self.wait = Some(studio_wait_label(&wait)),
            Err(err) => tracing::warn!("studio: reading the queue: {err}"),
        }
        self
    }
}

/// The studio's sentence for the current wait.
fn studio_wait_label(wait: &crate::jobs::Wait) -> String {
    let jobs = if wait.ahead == 1 { "1 job".to_string() } else { format!("{} jobs", wait.ahead) };
    match (wait.ahead, wait.estimated_start_seconds) {
        (0, _) => "Current wait: none, a run you start now is next in line.".into(),
        (_, Some(secs)) => format!(
            "Current wait: about {} before a run you start now begins ({jobs} ahead).",
            crate::jobs::queue::seconds_label(secs)
        ),
        (_, None) => format!("Current wait: {jobs} ahead of a run you start now."),
    }
}

/// The use cases a run may name: the catalog's, then "Other".
pub fn use_case_options(catalog: &Catalog) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> =
        catalog.use_cases().iter().map(|u| (u.slug.clone(), u.name.clone())).collect();
    options.push((create::OTHER_USE_CASE.to_string(), "Other".to_string()));
    options
}

/// A use case's name for the run page and history.
pub fn use_case_name(catalog: &Catalog, slug: Option<&str>) -> Option<String> {
    slug.map(|s| catalog.use_case(s).map_or_else(|| "Other".to_string(), |u| u.name.clone()))
}

/// Query values: `models` may repeat and may hold comma-separated slugs.
fn input_from_query(query: Option<&str>) -> RunInput {
    // Blind is on by default; a query from the form itself says whether its box was ticked.
    let mut input = RunInput { blind: true, ..RunInput::default() };
    let mut from_form = false;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "models" | "model" => input.models.extend(value.split(',').map(|s| s.trim().to_string())),
            "mode" => input.mode = value.into_owned(),
            "aspect_ratio" => input.aspect_ratio = value.into_owned(),
            "prompt" => input.prompt = value.chars().take(create::MAX_PROMPT_CHARS * 2).collect(),
            "seed" => input.seed = value.into_owned(),
            "use_case" => input.use_case = value.chars().take(100).collect(),
            "blind" => input.blind = value == "on" || value == "true",
            // The studio form's hidden marker: the blind box was on the page.
            "blind_shown" => from_form = true,
            _ => {}
        }
    }
    if from_form && !url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(k, _)| k == "blind") {
        input.blind = false;
    }
    input.models.retain(|m| !m.is_empty());
    input.models.truncate(16);
    input
}

/// `GET /studio`: the run form; also the no-JS "update quote" target.
async fn studio(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let catalog = state.catalog.current();
    let input = input_from_query(query.as_deref());
    let page =
        StudioPage::build(layout, &catalog, &input, FieldErrors::default()).with_wait(&state.pool, user.id).await;
    Ok(render(&page))
}

/// What the studio's multipart form carried.
#[derive(Default)]
struct RunForm {
    input: RunInput,
    idempotency_key: String,
    reference: Option<Bytes>,
}

impl FromMultipart for RunForm {
    fn from_multipart(fields: MultipartFields) -> Result<Self> {
        let mut form = RunForm::default();
        for (name, value) in fields.text {
            match name.as_str() {
                "prompt" => form.input.prompt = value,
                "models" => form.input.models.push(value),
                "mode" => form.input.mode = value,
                "aspect_ratio" => form.input.aspect_ratio = value,
                "seed" => form.input.seed = value,
                "idempotency_key" => form.idempotency_key = value,
                "use_case" => form.input.use_case = value,
                "blind" => form.input.blind = value == "on" || value == "true",
                _ => {}
            }
        }
        // A file input left empty still sends a part (with an empty file name and no bytes).
        form.reference =
            fields.files.into_iter().find(|f| f.field == "reference_image" && !f.bytes.is_empty()).map(|f| f.bytes);
        Ok(form)
    }
}

/// `POST /runs`: validates, prices and creates the run; 303 to its page. The idempotency key is
/// the form's `idempotency_key`, or, when the form has none (a script posting the form), the
/// `Idempotency-Key` header: the same meaning as in the JSON API.
async fn submit(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    headers: axum::http::HeaderMap,
    CsrfMultipart(form): CsrfMultipart<RunForm>,
) -> Result<Response> {
    let catalog = state.catalog.current();
    let header_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let asked = if form.idempotency_key.trim().is_empty() { header_key } else { form.idempotency_key.as_str() };
    let key = match create::check_idempotency_key(asked) {
        Ok(key) => key.to_string(),
        Err(_) => {
            let mut page = StudioPage::build(layout, &catalog, &form.input, FieldErrors::default());
            page.form_error = Some("This form has expired; check your choices and submit again.".into());
            return Ok((StatusCode::BAD_REQUEST, render(&page)).into_response());
        }
    };
    let submitted = create::submit(
        &state.pool,
        &state.store,
        &catalog,
        &state.config.queue,
        crate::jobs::Source::Studio,
        user.id,
        &form.input,
        form.reference,
        &key,
    )
    .await;
    match submitted {
        Ok(created) => Ok(Redirect::to(&format!("/runs/{}", created.run_id)).into_response()),
        Err(CreateError::Invalid(errors)) => {
            let mut page = StudioPage::build(layout, &catalog, &form.input, errors);
            page.form_error = Some("Please correct the marked fields.".into());
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(CreateError::KeyConflict { run_id, .. }) => {
            // The browser sent this form again after its choices changed (the back button).
            let mut page = StudioPage::build(layout, &catalog, &form.input, FieldErrors::default());
            page.form_error = Some(format!(
                "This form was already submitted with other choices (run {run_id}). Check your choices and \
                 submit again to start a new run."
            ));
            page.earlier_run = Some(format!("/runs/{run_id}"));
            Ok((StatusCode::CONFLICT, render(&page)).into_response())
        }
        Err(CreateError::InsufficientCredits { need, have }) => {
            let mut page = StudioPage::build(layout, &catalog, &form.input, FieldErrors::default());
            page.form_error = Some(format!(
                "Not enough credits: this run needs {need} credits and you have {have}. You need {} more.",
                need - have
            ));
            page.available = have;
            page.missing = need - have;
            Ok((StatusCode::PAYMENT_REQUIRED, render(&page)).into_response())
        }
        Err(err @ CreateError::TooManyJobs { retry_after, .. }) => {
            let mut page = StudioPage::build(layout, &catalog, &form.input, FieldErrors::default())
                .with_wait(&state.pool, user.id)
                .await;
            let message = err.to_string();
            let mut chars = message.chars();
            page.form_error = chars.next().map(|first| format!("{}{}.", first.to_uppercase(), chars.as_str()));
            let mut response = (StatusCode::TOO_MANY_REQUESTS, render(&page)).into_response();
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after.into());
            Ok(response)
        }
        Err(err) => Err(err.into()),
    }
}

async fn owned_run(state: &AppState, user_id: Uuid, raw_id: &str) -> Result<Run> {
    let run_id = AppError::parse_id(raw_id, "run")?;
    super::find_owned(&state.pool, run_id, user_id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that run".into()))
}

#[derive(askama::Template)]
#[template(path = "runs/run.html")]
pub struct RunPage {
    pub layout: Layout,
    pub run: RunView,
    pub models_param: String,
    pub prompt_param: String,
    pub has_reference: bool,
    pub use_case_name: Option<String>,
    /// The vote form's options (value, label), when the owner may vote now.
    pub vote_options: Vec<(String, String)>,
    /// Why voting is not possible (shown on blind runs), if it is not.
    pub vote_note: Option<String>,
    /// The recorded vote in words, and whether it may still be changed.
    pub vote_summary: Option<String>,
    pub vote_changeable: bool,
    /// The labels of a revealed blind run: "Model A: Flux 2".
    pub reveal_lines: Vec<String>,
    /// At least two images arrived: the page links to the comparison viewer.
    pub comparable: bool,
    /// The public address while the run is published.
    pub share_url: Option<String>,
    /// The owner may publish the run now (settled, an image, a blind run voted on).
    pub may_publish: bool,
    /// Why the run cannot be published (yet), when it cannot.
    pub publish_note: Option<String>,
    /// "Download all" is offered (an image arrived and the names are shown).
    pub downloadable: bool,
}

/// `GET /runs/{id}`: the models side by side (owner only; others get 404).
async fn run_page(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    Path(id): Path<String>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    let jobs = crate::jobs::for_run(&state.pool, run.run_id).await?;
    let vote = arena::votes::of_run(&state.pool, &run).await?;
    let view = RunView::for_owner(&run, &jobs, vote.is_some()).with_waits(&state.pool, &jobs).await?;
    let catalog = state.catalog.current();
    // "Run again" must not give a blind run away either: it names the models only once revealed.
    let models_param = if view.revealed {
        jobs.iter().map(|j| j.choice().value()).collect::<Vec<_>>().join(",")
    } else {
        String::new()
    };
    let prompt_param = url::form_urlencoded::byte_serialize(run.prompt.as_bytes()).collect();
    let now = time::OffsetDateTime::now_utc();
    let shown = run.in_shown_order(&jobs, |j| j.position);
    let settled = jobs.iter().all(|j| j.status().is_settled());
    let delivered: Vec<(usize, &crate::jobs::Job)> =
        shown.iter().enumerate().filter(|(_, j)| j.status() == JobStatus::Delivered).map(|(i, j)| (i, *j)).collect();
    let may_vote = run.blind && settled && delivered.len() >= 2 && vote.as_ref().is_none_or(|v| v.changeable(now));
    let label = |i: usize, job: &crate::jobs::Job| {
        if view.revealed { format!("{} ({})", Run::label(i), job.choice().label()) } else { Run::label(i) }
    };
    let mut vote_options = Vec::new();
    if may_vote {
        let letter = |i: usize| char::from(b'A' + i as u8).to_string();
        if delivered.len() == 2 {
            for (i, job) in &delivered {
                vote_options.push((letter(*i), format!("{} is better", label(*i, job))));
            }
            vote_options.push(("tie".into(), "Tie".into()));
            vote_options.push(("both_bad".into(), "Both bad".into()));
        } else {
            for (i, job) in &delivered {
                vote_options.push((letter(*i), format!("{} is the best", label(*i, job))));
            }
            vote_options.push(("all_bad".into(), "All bad".into()));
        }
    }
    let vote_note = if !run.blind || vote.is_some() {
        None
    } else if !settled {
        Some("You can vote once every image has arrived.".to_string())
    } else if delivered.len() < 2 {
        Some("Fewer than two images arrived, so this run cannot be voted on.".to_string())
    } else {
        None
    };
    let vote_summary = vote.as_ref().map(|v| match (v.choice.as_str(), v.winner) {
        ("best", Some(w)) => {
            let name = v.entries.get(w as usize).map(|e| arena::board::describe(&catalog, e).0).unwrap_or_default();
            format!("You picked {name} as the best.")
        }
        ("tie", _) => "You called it a tie.".to_string(),
        _ => if v.entries.len() == 2 { "You said both were bad." } else { "You said all were bad." }.to_string(),
    });
    let reveal_lines = if run.blind && view.revealed {
        shown.iter().enumerate().map(|(i, j)| format!("{}: {}", Run::label(i), j.choice().label())).collect()
    } else {
        Vec::new()
    };
    let crate::sharing::Standing { live: share, hidden } = crate::sharing::standing(&state.pool, run.run_id).await?;
    let hidden = share.is_none() && hidden;
    let publish_note = if hidden {
        Some("An administrator hid this run after a report; it cannot be shared again.".to_string())
    } else if !settled {
        Some("You can share this run once every image has arrived.".to_string())
    } else if delivered.is_empty() {
        Some("No image arrived, so there is nothing to share.".to_string())
    } else if run.blind && vote.is_none() {
        Some("Blind runs can be shared once you have voted.".to_string())
    } else {
        None
    };
    Ok(render(&RunPage {
        share_url: share.as_ref().map(|s| state.config.absolute_url(&s.path())),
        may_publish: share.is_none() && publish_note.is_none(),
        publish_note: if share.is_some() { None } else { publish_note },
        downloadable: view.revealed && !delivered.is_empty(),
        layout,
        has_reference: run.reference_key.is_some(),
        use_case_name: use_case_name(&catalog, run.use_case.as_deref()),
        run: view,
        models_param,
        prompt_param,
        vote_options,
        vote_note,
        vote_changeable: vote.as_ref().is_some_and(|v| v.changeable(now)),
        vote_summary,
        reveal_lines,
        comparable: settled && delivered.len() >= 2,
    }))
}

/// The longest side of a job's stored web rendition (the thumbnail the worker makes).
const RENDITION_SIDE: i32 = 512;

/// The viewer images of a run's view: its delivered jobs in display order. A masked view's
/// images are the neutral blind copies (rendition and original alike), with no sizes.
pub fn viewer_images(view: &RunView, jobs: &[crate::jobs::Job]) -> Vec<ViewerImage> {
    let masked = view.blind && !view.revealed;
    view.jobs
        .iter()
        .filter(|j| j.status == JobStatus::Delivered)
        .filter_map(|j| {
            let original = j.image_url.clone()?;
            if masked {
                return Some(ViewerImage {
                    label: j.name.clone(),
                    rendition: original.clone(),
                    rendition_width: None,
                    rendition_height: None,
                    original,
                    width: None,
                    height: None,
                });
            }
            let job = jobs.iter().find(|job| job.job_id == j.id)?;
            let (rendition, rendition_width, rendition_height) = match (&job.thumb_key, j.width, j.height) {
                (Some(key), Some(w), Some(h)) if w > 0 && h > 0 => {
                    let scale = f64::from(RENDITION_SIDE) / f64::from(w.max(h));
                    let (rw, rh) = if scale < 1.0 {
                        ((f64::from(w) * scale).round() as i32, (f64::from(h) * scale).round() as i32)
                    } else {
                        (w, h)
                    };
                    (format!("/media/{key}"), Some(rw), Some(rh))
                }
                _ => (original.clone(), j.width, j.height),
            };
            Some(ViewerImage {
                label: j.name.clone(),
                rendition,
                rendition_width,
                rendition_height,
                original,
                width: j.width,
                height: j.height,
            })
        })
        .collect()
}

#[derive(askama::Template)]
#[template(path = "runs/compare.html")]
pub struct ComparePage {
    pub layout: Layout,
    pub run: RunView,
    pub images: Vec<ViewerImage>,
}

/// `GET /runs/{id}/compare`: the run's images in the comparison viewer (owner only; others get
/// 404). An unrevealed blind run shows only the labels and the neutral copies.
async fn compare_page(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    Path(id): Path<String>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    let jobs = crate::jobs::for_run(&state.pool, run.run_id).await?;
    let vote = arena::votes::of_run(&state.pool, &run).await?;
    let view = RunView::for_owner(&run, &jobs, vote.is_some());
    let images = viewer_images(&view, &jobs);
    Ok(render(&ComparePage { layout, run: view, images }))
}

/// `GET /runs/{id}/events`: the run's state now, then after every change, until every job is
/// settled (event `done`) or the server shuts down. Besides the notifications of this run, the
/// stream reloads on a fixed period (`Config::live_refresh`, a safety net that other runs'
/// notifications do not postpone) and when the listener reconnected (notifications may have
/// been lost meanwhile).
async fn run_events(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    session: tower_sessions::Session,
    Path(id): Path<String>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    let session_id = session.id().map(|id| id.to_string()).ok_or(AppError::Unauthorized)?;
    let rx = state.run_events.subscribe(&state.pool, &state.shutdown);
    let period = state.config.live_refresh;
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let initial =
        LiveRun { rx, refresh, state: state.clone(), run, session_id, last: None, first: true, finished: false };
    let stream = futures::stream::unfold(initial, |mut live| async move {
        let view = loop {
            let view = live.next_view().await?;
            // The safety net reloads on a timer: an unchanged run is not sent again.
            let json = serde_json::to_string(&view).unwrap_or_default();
            if live.last.as_deref() != Some(json.as_str()) {
                live.last = Some(json);
                break view;
            }
        };
        let name = if view.is_pending() { "run" } else { "done" };
        live.finished = !view.is_pending();
        let event = Event::default().event(name).json_data(&view).unwrap_or_else(|_| Event::default().comment("x"));
        Some((Ok::<_, Infallible>(event), live))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// The state of one live stream.
struct LiveRun {
    rx: tokio::sync::broadcast::Receiver<RunSignal>,
    refresh: tokio::time::Interval,
    state: AppState,
    run: Run,
    /// The stream ends with the session it was opened in (log-out, "sign out everywhere").
    session_id: String,
    /// The last view sent, as JSON.
    last: Option<String>,
    first: bool,
    finished: bool,
}

impl LiveRun {
    /// Waits for a reason to reload (none the first time), then loads the run's view; `None`
    /// ends the stream.
    async fn next_view(&mut self) -> Option<RunView> {
        if self.finished || self.state.shutdown.is_cancelled() {
            return None;
        }
        if !std::mem::take(&mut self.first) {
            loop {
                tokio::select! {
                    _ = self.state.shutdown.cancelled() => return None,
                    _ = self.refresh.tick() => break,
                    message = self.rx.recv() => match message {
                        Ok(RunSignal::Changed(run_id)) if run_id == self.run.run_id => break,
                        Ok(RunSignal::Changed(_)) => continue,
                        Ok(RunSignal::Resync) | Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return None,
                    },
                }
            }
        }
        // In a task of its own: a browser closing the stream must not cancel a query half-way
        // (see `app::run_to_completion`).
        let (pool, run, session_id) = (self.state.pool.clone(), self.run.clone(), self.session_id.clone());
        let loaded = tokio::spawn(async move {
            if !accounts::session_is_live(&pool, &session_id).await? {
                return Ok(None);
            }
            RunView::load(&pool, &run).await.map(Some)
        });
        match loaded.await {
            Ok(Ok(Some(view))) => Some(view),
            Ok(Ok(None)) => None,
            Ok(Err(err)) => {
                tracing::warn!("run events: {err}");
                None
            }
            Err(err) => {
                tracing::warn!("run events: {err}");
                None
            }
        }
    }
}

pub struct HistoryItem {
    pub run: RunView,
    pub when: String,
    pub use_case: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "runs/history.html")]
pub struct HistoryPage {
    pub layout: Layout,
    pub items: Vec<HistoryItem>,
    pub page: i64,
    pub pages: i64,
}

/// `GET /runs?page=N`: the user's runs, newest first.
async fn history(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let user_id = user.id;
    let page: i64 = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1i64)
        .clamp(1, 100_000);
    let total = super::count(&state.pool, user_id).await?;
    let pages = ((total + HISTORY_PAGE_SIZE - 1) / HISTORY_PAGE_SIZE).max(1);
    let runs = super::list(&state.pool, user_id, HISTORY_PAGE_SIZE, (page - 1) * HISTORY_PAGE_SIZE).await?;
    let ids: Vec<Uuid> = runs.iter().map(|r| r.run_id).collect();
    let jobs = crate::jobs::for_runs(&state.pool, &ids).await?;
    let voted = super::voted(&state.pool, &ids).await?;
    let catalog = state.catalog.current();
    let items = runs
        .iter()
        .map(|run| {
            let mine: Vec<_> = jobs.iter().filter(|j| j.run_id == run.run_id).cloned().collect();
            HistoryItem {
                use_case: use_case_name(&catalog, run.use_case.as_deref()),
                run: RunView::for_owner(run, &mine, voted.contains(&run.run_id)),
                when: run
                    .created_at
                    .format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC"))
                    .unwrap_or_default(),
            }
        })
        .collect();
    Ok(render(&HistoryPage { layout, items, page, pages }))
}
