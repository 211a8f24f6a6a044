//! The arena's pages: voting on a blind run (`POST /runs/{id}/vote`), revealing it without a
//! vote (`POST /runs/{id}/reveal`), its neutral image copies (`GET /runs/{id}/blind/{letter}`),
//! the boards (`GET /leaderboard`, `GET /leaderboard/{use_case}`) and the signed-in user's own
//! board (`GET /account/arena`).

use axum::{
    extract::{Path, RawQuery, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{
    board::{self, ALL, DEMO, Entry, Snapshot},
    rating,
    votes::{self, Choice, VoteError},
};
use crate::{
    catalog::Catalog,
    jobs::{self, JobStatus},
    runs::{self, Run},
    state::AppState,
    storage,
    web::{AppError, CsrfForm, Layout, Result, Routes, SignedIn, csrf::NoFields, render},
};

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/runs/{id}/vote", post(vote))
        .route("/runs/{id}/reveal", post(reveal))
        .route("/runs/{id}/blind/{letter}", get(blind_image))
        .route("/leaderboard", get(leaderboard_all))
        .route("/leaderboard/{use_case}", get(leaderboard_board))
        .route("/account/arena", get(own_board))
}

async fn owned_run(state: &AppState, user_id: uuid::Uuid, raw_id: &str) -> Result<Run> {
    let run_id = AppError::parse_id(raw_id, "run")?;
    runs::find_owned(&state.pool, run_id, user_id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that run".into()))
}

impl From<VoteError> for AppError {
    fn from(err: VoteError) -> Self {
        match err {
            VoteError::Db(e) => AppError::from(e),
            VoteError::Locked => AppError::Conflict(err.to_string()),
            other => AppError::Unprocessable(other.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct VoteForm {
    #[serde(default)]
    choice: String,
}

/// `POST /runs/{id}/vote`: the owner's vote (or its change, within the window); 303 back to the
/// run, which now shows the names.
async fn vote(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<VoteForm>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    let choice =
        Choice::parse(&form.choice).ok_or_else(|| AppError::Unprocessable("choose one of the options".into()))?;
    votes::cast(&state.pool, &run, choice).await?;
    Ok(Redirect::to(&format!("/runs/{}", run.run_id)).into_response())
}

/// `POST /runs/{id}/reveal`: shows the names without a vote (a later vote never counts).
async fn reveal(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    votes::reveal(&state.pool, run.run_id).await?;
    Ok(Redirect::to(&format!("/runs/{}", run.run_id)).into_response())
}

/// The longest side of a blind copy.
const BLIND_SIDE: u32 = 1024;

/// `GET /runs/{id}/blind/{letter}`: the image shown as Model `letter`, re-encoded as a JPEG of
/// at most 1024 px a side: the same format, size and (absent) metadata for every model, at an
/// address that names neither model nor job. Only once every job of the run is settled.
async fn blind_image(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path((id, letter)): Path<(String, String)>,
) -> Result<Response> {
    let run = owned_run(&state, user.id, &id).await?;
    let index = match letter.as_bytes() {
        [c @ b'a'..=b'd'] => usize::from(c - b'a'),
        _ => return Err(AppError::not_found()),
    };
    let all = jobs::for_run(&state.pool, run.run_id).await?;
    if !run.blind || all.iter().any(|j| !j.status().is_settled()) {
        return Err(AppError::not_found());
    }
    let shown = run.in_shown_order(&all, |j| j.position);
    let job = shown.get(index).filter(|j| j.status() == JobStatus::Delivered).ok_or_else(AppError::not_found)?;
    let key = job.image_key.clone().ok_or_else(AppError::not_found)?;
    let bytes = state.store.get(&key).await?.ok_or_else(AppError::not_found)?;
    let encoded = storage::images::run(move || -> anyhow::Result<bytes::Bytes> {
        let img = storage::images::decode(&bytes, &storage::images::GENERATED)?;
        let img = img.thumbnail(BLIND_SIDE, BLIND_SIDE).to_rgb8();
        let mut out = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img)?;
        Ok(bytes::Bytes::from(out.into_inner()))
    })
    .await??;
    let mut response = encoded.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("inline"));
    Ok(response)
}

/// A board's address and name, for the board links.
pub struct BoardLink {
    pub href: String,
    pub name: String,
    pub current: bool,
}

/// One row of the table, formatted.
pub struct Row {
    pub rank: String,
    pub name: String,
    pub entry: String,
    pub rating: String,
    pub interval: String,
    pub provisional: bool,
    pub votes: i64,
    pub win_rate: String,
    pub price: String,
    pub cost_per_win: String,
    pub median: String,
}

/// A dot of the quality-against-price chart (SVG coordinates).
pub struct Dot {
    pub x: String,
    pub y: String,
    pub y_lo: String,
    pub y_hi: String,
    pub label: String,
    pub label_x: String,
    pub provisional: bool,
}

pub struct Tick {
    pub pos: String,
    pub label: String,
}

#[derive(askama::Template)]
#[template(path = "arena/leaderboard.html")]
pub struct LeaderboardPage {
    pub layout: Layout,
    pub board: String,
    pub title: String,
    pub demo: bool,
    pub boards: Vec<BoardLink>,
    pub computed_at: Option<String>,
    pub counted: i64,
    pub excluded: i64,
    pub bootstrap: i32,
    pub min_votes: u64,
    pub rows: Vec<Row>,
    pub sort: String,
    pub sorts: Vec<(String, String, String)>,
    pub dots: Vec<Dot>,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    /// The position check in words, when the board has decisive two-way votes.
    pub position_check: Option<String>,
}

/// "Model A won 52% of 120 decisive two-way votes; with no position bias that stays within
/// 50% ± 9% (95%)."
fn position_check(snapshot: &Snapshot) -> Option<String> {
    if snapshot.decisive_votes <= 0 {
        return None;
    }
    let n = snapshot.decisive_votes as f64;
    let share = snapshot.first_won as f64 / n;
    let margin = 1.96 * 0.5 / n.sqrt();
    Some(format!(
        "Position check: the image shown first (Model A) won {:.0}% of {} decisive two-way votes; with no \
         position bias that share stays within 50% ± {:.0}% (95%).",
        share * 100.0,
        snapshot.decisive_votes,
        margin * 100.0
    ))
}

/// The boards a page links to: all, each use case, other, demo.
fn board_links(catalog: &Catalog, current: &str) -> Vec<BoardLink> {
    let mut links =
        vec![BoardLink { href: "/leaderboard".into(), name: "All use cases".into(), current: current == ALL }];
    for u in catalog.use_cases() {
        links.push(BoardLink {
            href: format!("/leaderboard/{}", u.slug),
            name: u.name.clone(),
            current: current == u.slug,
        });
    }
    links.push(BoardLink { href: "/leaderboard/other".into(), name: "Other".into(), current: current == votes::OTHER });
    links.push(BoardLink { href: "/leaderboard/demo".into(), name: "Sandbox demo".into(), current: current == DEMO });
    links
}

/// A board's title, or `None` when there is no such board.
pub fn board_title(catalog: &Catalog, board: &str) -> Option<String> {
    match board {
        ALL => Some("All use cases".into()),
        DEMO => Some("Sandbox renderings — not real models".into()),
        votes::OTHER => Some("Other use cases".into()),
        slug => catalog.use_case(slug).map(|u| u.name.clone()),
    }
}

fn fmt_time(at: time::OffsetDateTime) -> String {
    at.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap_or_default()
}

fn sort_rows(entries: &mut [Entry], sort: &str) {
    let key = |v: Option<f64>| v.unwrap_or(f64::INFINITY);
    match sort {
        "price" => entries.sort_by(|a, b| key(a.price.map(|p| p as f64)).total_cmp(&key(b.price.map(|p| p as f64)))),
        "cost" => entries.sort_by(|a, b| key(a.cost_per_win).total_cmp(&key(b.cost_per_win))),
        "time" => {
            entries.sort_by(|a, b| key(a.median_ms.map(|m| m as f64)).total_cmp(&key(b.median_ms.map(|m| m as f64))))
        }
        "votes" => entries.sort_by_key(|e| std::cmp::Reverse(e.votes)),
        _ => entries.sort_by(|a, b| a.provisional.cmp(&b.provisional).then(b.rating.total_cmp(&a.rating))),
    }
}

fn chart(entries: &[Entry]) -> (Vec<Dot>, Vec<Tick>, Vec<Tick>) {
    let priced: Vec<&Entry> = entries.iter().filter(|e| e.price.is_some()).collect();
    if priced.is_empty() {
        return (Vec::new(), Vec::new(), Vec::new());
    }
    // Plot area: x 60..580, y 20..280 (viewBox 0 0 600 320).
    let max_price = priced.iter().filter_map(|e| e.price).max().unwrap_or(1).max(1) as f64 * 1.1;
    let lo = priced.iter().map(|e| e.rating_lo).fold(f64::INFINITY, f64::min).min(950.0);
    let hi = priced.iter().map(|e| e.rating_hi).fold(f64::NEG_INFINITY, f64::max).max(1050.0);
    let x = |p: f64| 60.0 + 520.0 * p / max_price;
    let y = |r: f64| 280.0 - 260.0 * (r - lo) / (hi - lo);
    let dots = priced
        .iter()
        .map(|e| {
            let px = x(e.price.unwrap_or(0) as f64);
            Dot {
                x: format!("{px:.1}"),
                y: format!("{:.1}", y(e.rating)),
                y_lo: format!("{:.1}", y(e.rating_lo)),
                y_hi: format!("{:.1}", y(e.rating_hi)),
                label: e.name.clone(),
                label_x: format!("{:.1}", px + 6.0),
                provisional: e.provisional,
            }
        })
        .collect();
    let x_ticks = (0..=4)
        .map(|i| {
            let p = max_price * f64::from(i) / 4.0;
            Tick { pos: format!("{:.1}", x(p)), label: format!("{p:.0}") }
        })
        .collect();
    let y_ticks = (0..=4)
        .map(|i| {
            let r = lo + (hi - lo) * f64::from(i) / 4.0;
            Tick { pos: format!("{:.1}", y(r)), label: format!("{r:.0}") }
        })
        .collect();
    (dots, x_ticks, y_ticks)
}

async fn leaderboard_page(state: &AppState, layout: Layout, board: &str, query: Option<&str>) -> Result<Response> {
    let catalog = state.catalog.current();
    let title =
        board_title(&catalog, board).ok_or_else(|| AppError::NotFound("there is no such leaderboard".into()))?;
    let sort = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "sort")
        .map(|(_, v)| v.into_owned())
        .filter(|s| ["rating", "price", "cost", "time", "votes"].contains(&s.as_str()))
        .unwrap_or_else(|| "rating".into());
    let latest: Option<(Snapshot, Vec<Entry>)> = board::latest(state.read_pool.get(), board).await?;
    let (snapshot, mut entries) = match latest {
        Some((s, e)) => (Some(s), e),
        None => (None, Vec::new()),
    };
    let (dots, x_ticks, y_ticks) = chart(&entries);
    sort_rows(&mut entries, &sort);
    let rows = entries
        .iter()
        .map(|e| Row {
            rank: e.rank.map_or_else(|| "–".into(), |r| r.to_string()),
            name: e.name.clone(),
            entry: e.entry.clone(),
            rating: format!("{:.0}", e.rating),
            // A bootstrap over a handful of votes is degenerate (often ±0): no interval shown
            // until the entry has the minimum of votes.
            interval: if e.provisional {
                "too few votes for an interval".into()
            } else {
                format!("+{:.0} / −{:.0}", e.rating_hi - e.rating, e.rating - e.rating_lo)
            },
            provisional: e.provisional,
            votes: e.votes,
            win_rate: e.win_rate.map_or_else(|| "–".into(), |w| format!("{:.0}%", w * 100.0)),
            price: e.price.map_or_else(|| "–".into(), |p| p.to_string()),
            cost_per_win: match (e.cost_per_win, e.cost_per_win_lo, e.cost_per_win_hi) {
                (Some(c), Some(lo), Some(hi)) if !e.provisional => format!("{c:.1} ({lo:.1}–{hi:.1})"),
                (Some(c), _, _) => format!("{c:.1}"),
                _ => "–".into(),
            },
            median: match e.median_ms {
                Some(ms) if e.timed_jobs >= 10 => format!("{:.1} s", ms as f64 / 1000.0),
                Some(_) => "too few jobs".into(),
                None => "–".into(),
            },
        })
        .collect();
    let base = if board == ALL { "/leaderboard".to_string() } else { format!("/leaderboard/{board}") };
    let sorts =
        [("rating", "Rating"), ("cost", "Cost per win"), ("price", "Price"), ("time", "Time"), ("votes", "Votes")]
            .into_iter()
            .map(|(key, label)| (key.to_string(), label.to_string(), format!("{base}?sort={key}")))
            .collect();
    Ok(render(&LeaderboardPage {
        layout,
        board: board.to_string(),
        title,
        demo: board == DEMO,
        boards: board_links(&catalog, board),
        computed_at: snapshot.as_ref().map(|s| fmt_time(s.computed_at)),
        counted: snapshot.as_ref().map_or(0, |s| s.counted_votes),
        excluded: snapshot.as_ref().map_or(0, |s| s.excluded_votes),
        bootstrap: snapshot.as_ref().map_or(state.config.arena.bootstrap as i32, |s| s.bootstrap),
        min_votes: state.config.arena.min_votes,
        rows,
        sort,
        sorts,
        dots,
        x_ticks,
        y_ticks,
        position_check: snapshot.as_ref().and_then(position_check),
    }))
}

/// `GET /leaderboard`: every use case together.
async fn leaderboard_all(State(state): State<AppState>, layout: Layout, RawQuery(query): RawQuery) -> Result<Response> {
    leaderboard_page(&state, layout, ALL, query.as_deref()).await
}

/// `GET /leaderboard/{use_case}`: one use case, `other`, or the sandbox `demo` board.
async fn leaderboard_board(
    State(state): State<AppState>,
    layout: Layout,
    Path(use_case): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    if use_case == ALL {
        return Ok(Redirect::permanent("/leaderboard").into_response());
    }
    leaderboard_page(&state, layout, &use_case, query.as_deref()).await
}

pub struct OwnRow {
    pub name: String,
    pub rating: String,
    pub votes: u64,
    pub win_rate: String,
}

#[derive(askama::Template)]
#[template(path = "arena/own.html")]
pub struct OwnBoardPage {
    pub layout: Layout,
    pub rows: Vec<OwnRow>,
    pub votes: usize,
}

/// How many of a user's newest votes their own board is fitted from.
pub const OWN_BOARD_VOTES: i64 = 1000;

/// `GET /account/arena`: the models ranked by the signed-in user's own votes (every vote they
/// cast, blind or not, sandbox or not: it is their board). Fitted on the spot without
/// intervals: at most 1,000 votes, a few milliseconds.
async fn own_board(State(state): State<AppState>, SignedIn(user): SignedIn, layout: Layout) -> Result<Response> {
    let catalog = state.catalog.current();
    let mine = votes::of_voter(&state.pool, user.id, OWN_BOARD_VOTES).await?;
    let loaded: Vec<board::LoadedVote> = mine
        .iter()
        .map(|v| board::LoadedVote {
            vote_id: v.vote_id,
            use_case: v.use_case.clone(),
            choice: v.choice.clone(),
            winner: v.winner,
            entries: v.entries.clone(),
            sandbox: false,
            excluded: None,
        })
        .collect();
    let count = loaded.len();
    let input = board::boards(&loaded).remove(ALL).unwrap_or_default();
    let fitted = rating::rate(
        input.entries.len(),
        &input.votes,
        &[],
        &rating::Settings { bootstrap: 0, seed: 0, min_votes: 1, prior_games: 1.0 },
    );
    let mut rated = fitted.entries.clone();
    rated.sort_by(|a, b| b.rating.total_cmp(&a.rating));
    let rows = rated
        .iter()
        .map(|e| OwnRow {
            name: board::describe(&catalog, &input.entries[e.index]).0,
            rating: format!("{:.0}", e.rating),
            votes: e.votes,
            win_rate: e.win_rate.map_or_else(|| "–".into(), |w| format!("{:.0}%", w * 100.0)),
        })
        .collect();
    Ok(render(&OwnBoardPage { layout, rows, votes: count }))
}
