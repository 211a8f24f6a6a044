//! The `/credits` pages: balance, packs, payments and history (with a CSV download), the
//! checkout start, the sandbox's test-mode checkout page, and each payment's status page (where
//! Stripe sends buyers back).

use axum::{
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use time::{OffsetDateTime, macros::format_description};
use uuid::Uuid;

use crate::{
    ledger::{self, HistoryLine},
    payments::{self, Fulfilment, Payment, ProviderKind, Status, provider::CheckoutRequest, webhook},
    state::AppState,
    web::{AppError, CsrfForm, Layout, Result, Routes, SignedIn, csrf::NoFields, render},
};

/// History lines per page on `/credits`.
pub const HISTORY_PAGE_SIZE: i64 = 20;
/// Payments listed on `/credits`.
const PAYMENTS_SHOWN: i64 = 20;

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/credits", get(credits_page))
        .route("/credits/history.csv", get(history_csv))
        .route("/credits/checkout", post(checkout))
        .route("/credits/checkout/sandbox/{payment_id}", get(sandbox_page))
        .route("/credits/checkout/sandbox/{payment_id}/pay", post(sandbox_pay))
        .route("/credits/checkout/sandbox/{payment_id}/cancel", post(sandbox_cancel))
        .route("/credits/payments/{payment_id}", get(payment_page))
        .route("/credits/payments/{payment_id}/cancel", post(cancel_payment))
}

/// `27 Nov 2026, 14:05 UTC`
pub fn format_datetime(at: OffsetDateTime) -> String {
    let fmt = format_description!("[day padding:none] [month repr:short] [year], [hour]:[minute] UTC");
    at.to_offset(time::UtcOffset::UTC).format(&fmt).unwrap_or_else(|_| at.to_string())
}

/// `1,200`
pub fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

struct PackView {
    slug: String,
    name: String,
    credits: String,
    price: String,
    per_credit: String,
    description: String,
    savings: i64,
    best_value: bool,
}

struct LineView {
    date: String,
    iso_date: String,
    label: &'static str,
    memo: String,
    amount: i64,
    balance_after: i64,
    href: Option<String>,
    link_text: &'static str,
}

impl LineView {
    fn from_line(line: &HistoryLine) -> Self {
        let (href, link_text) = if let Some(run_id) = line.run_id {
            (Some(format!("/runs/{run_id}")), "View run")
        } else if let Some(payment_id) = line.payment_id {
            (Some(format!("/credits/payments/{payment_id}")), "View payment")
        } else {
            (None, "")
        };
        LineView {
            date: format_datetime(line.created_at),
            // Whole seconds: HTML's `datetime` allows at most three fractional digits.
            iso_date: line
                .created_at
                .replace_nanosecond(0)
                .unwrap_or(line.created_at)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            label: line.label(),
            memo: line.memo.clone(),
            amount: line.amount,
            balance_after: line.balance_after,
            href,
            link_text,
        }
    }

    fn amount_text(&self) -> String {
        if self.amount > 0 { format!("+{}", group(self.amount)) } else { format!("−{}", group(-self.amount)) }
    }
}

struct PaymentView {
    href: String,
    date: String,
    pack: String,
    credits: String,
    price: String,
    status: Status,
    /// Where a pending checkout can be resumed.
    resume: Option<String>,
}

impl PaymentView {
    fn new(p: &Payment) -> Self {
        let resume = match (p.status, p.provider) {
            (Status::Pending, ProviderKind::Sandbox) => Some(format!("/credits/checkout/sandbox/{}", p.payment_id)),
            (Status::Pending, _) => p.checkout_url.clone().filter(|u| u.starts_with("https://")),
            _ => None,
        };
        PaymentView {
            href: p.href(),
            date: format_datetime(p.created_at),
            pack: p.pack_name.clone(),
            credits: group(p.credits),
            price: p.price(),
            status: p.status,
            resume,
        }
    }
}

#[derive(askama::Template)]
#[template(path = "credits/index.html")]
struct CreditsPage {
    layout: Layout,
    available: String,
    held_text: String,
    sandbox: bool,
    packs: Vec<PackView>,
    pack_error: Option<String>,
    payments: Vec<PaymentView>,
    lines: Vec<LineView>,
    page: i64,
    pages: i64,
    total_lines: i64,
    prev_href: Option<String>,
    next_href: Option<String>,
}

#[derive(Deserialize, Default)]
struct HistoryQuery {
    #[serde(default)]
    page: Option<String>,
}

async fn credits_page(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    Query(query): Query<HistoryQuery>,
) -> Result<Response> {
    let page = query.page.as_deref().and_then(|p| p.trim().parse::<i64>().ok()).unwrap_or(1);
    Ok(render(&credits_view(&state, layout, user.id, page, None).await?))
}

async fn credits_view(
    state: &AppState,
    layout: Layout,
    user_id: Uuid,
    page: i64,
    pack_error: Option<String>,
) -> Result<CreditsPage> {
    // The layout loaded the signed-in user with their balance a moment ago.
    let balance = match layout.user.as_ref().filter(|u| u.id == user_id) {
        Some(user) => ledger::Balance { available: user.available, held: user.held },
        None => ledger::balance(&state.pool, user_id).await?,
    };
    let ledger::HistoryPage { lines: history, total: total_lines, page, pages } =
        ledger::history_page(&state.pool, user_id, HISTORY_PAGE_SIZE, page).await?;
    let recent = payments::user_payments(&state.pool, user_id, PAYMENTS_SHOWN).await?;
    let catalog = &state.payments.packs;
    let best = catalog.packs.iter().map(|p| catalog.savings_percent(p)).max().unwrap_or(0);
    let packs = catalog
        .packs
        .iter()
        .map(|p| {
            let savings = catalog.savings_percent(p);
            PackView {
                slug: p.slug.clone(),
                name: p.name.clone(),
                credits: group(p.credits),
                price: catalog.money(p.price_cents),
                per_credit: p.price_per_credit(),
                description: p.description.clone(),
                savings,
                best_value: savings > 0 && savings == best,
            }
        })
        .collect();
    Ok(CreditsPage {
        available: group(balance.available),
        held_text: group(balance.held),
        sandbox: state.payments.is_sandbox(),
        packs,
        pack_error,
        payments: recent.iter().map(PaymentView::new).collect(),
        lines: history.iter().map(LineView::from_line).collect(),
        page,
        pages,
        total_lines,
        prev_href: (page > 1).then(|| format!("/credits?page={}#history", page - 1)),
        next_href: (page < pages).then(|| format!("/credits?page={}#history", page + 1)),
        layout,
    })
}

/// One CSV field: quoted when it holds a separator, quote or line break; text that a
/// spreadsheet would run as a formula is prefixed with `'`.
fn csv_field(value: &str, text: bool) -> String {
    let guarded = if text && value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) { format!("\"{}\"", guarded.replace('"', "\"\"")) } else { guarded }
}

async fn history_csv(State(state): State<AppState>, SignedIn(user): SignedIn) -> Result<Response> {
    let user_id = user.id;
    let mut out = String::from("date,type,description,amount,balance_after,run_id,payment_id\r\n");
    let mut offset = 0;
    loop {
        let batch = ledger::history(&state.pool, user_id, 1000, offset).await?;
        for line in &batch {
            let date = line.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            let fields = [
                csv_field(&date, false),
                csv_field(line.label(), true),
                csv_field(&line.memo, true),
                line.amount.to_string(),
                line.balance_after.to_string(),
                line.run_id.map(|id| id.to_string()).unwrap_or_default(),
                line.payment_id.map(|id| id.to_string()).unwrap_or_default(),
            ];
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        if (batch.len() as i64) < 1000 {
            break;
        }
        offset += 1000;
    }
    let filename = format!("faceoff-credits-{}.csv", OffsetDateTime::now_utc().date());
    let mut response = out.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct CheckoutForm {
    #[serde(default)]
    pack: String,
}

async fn checkout(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    CsrfForm(form): CsrfForm<CheckoutForm>,
) -> Result<Response> {
    let Some(pack) = state.payments.packs.get(form.pack.trim()).cloned() else {
        let message = if form.pack.trim().is_empty() {
            "Choose a credit pack to buy.".to_string()
        } else {
            format!(
                "There is no credit pack called \u{201c}{}\u{201d}; choose one of the packs below.",
                form.pack.trim()
            )
        };
        let page = credits_view(&state, layout, user.id, 1, Some(message)).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
    };
    let provider = state.payments.provider.clone();
    let currency = state.payments.packs.currency.clone();
    let payment = payments::create_payment(&state.pool, user.id, &pack, &currency, provider.kind()).await?;
    let page = format!("/credits/payments/{}", payment.payment_id);
    let request = CheckoutRequest {
        payment_id: payment.payment_id,
        user_id: user.id,
        email: &user.email,
        pack: &pack,
        currency: &currency,
        success_url: state.config.absolute_url(&format!("{page}?session_id={{CHECKOUT_SESSION_ID}}")),
        cancel_url: state.config.absolute_url(&format!("{page}?canceled=1")),
    };
    match provider.create_session(&request).await {
        Ok(session) => {
            payments::attach_session(&state.pool, payment.payment_id, &session.id, &session.url).await?;
            tracing::info!(payment_id = %payment.payment_id, pack = %pack.slug, provider = provider.kind().as_str(), "checkout started");
            Ok(Redirect::to(&session.url).into_response())
        }
        Err(err) => {
            tracing::error!(payment_id = %payment.payment_id, "checkout could not start: {err}");
            payments::mark_failed(&state.pool, payment.payment_id, "the payment provider could not start the checkout")
                .await?;
            Err(AppError::Unavailable(anyhow::anyhow!(err)))
        }
    }
}

/// A sandbox payment of the signed-in user, or 404.
async fn own_sandbox_payment(state: &AppState, user_id: Uuid, raw_id: &str) -> Result<Payment> {
    let payment = payments::get_user_payment(&state.pool, user_id, AppError::parse_id(raw_id, "checkout")?)
        .await?
        .filter(|p| p.provider == ProviderKind::Sandbox)
        .ok_or_else(|| AppError::NotFound("we could not find that checkout".into()))?;
    Ok(payment)
}

#[derive(askama::Template)]
#[template(path = "payments/sandbox.html")]
struct SandboxPage {
    layout: Layout,
    payment_id: Uuid,
    pack: String,
    credits: String,
    price: String,
    email: String,
    enabled: bool,
}

async fn sandbox_page(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    Path(raw_id): Path<String>,
) -> Result<Response> {
    let payment = own_sandbox_payment(&state, user.id, &raw_id).await?;
    if payment.status != Status::Pending {
        return Ok(Redirect::to(&payment.href()).into_response());
    }
    let page = SandboxPage {
        payment_id: payment.payment_id,
        pack: payment.pack_name.clone(),
        credits: group(payment.credits),
        price: payment.price(),
        email: user.email.clone(),
        enabled: state.payments.is_sandbox(),
        layout,
    };
    let mut response = render(&page);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn sandbox_pay(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(raw_id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response> {
    let payment = own_sandbox_payment(&state, user.id, &raw_id).await?;
    // With Stripe configured, sandbox payments can never be completed: no free credits.
    if !state.payments.is_sandbox() {
        return Err(AppError::Forbidden("test-mode checkout is turned off on this site".into()));
    }
    match payment.status {
        Status::Pending => {}
        Status::Paid => return Ok(Redirect::to(&payment.href()).into_response()),
        Status::Canceled | Status::Failed => {
            return Err(AppError::Conflict(format!(
                "this checkout was {}; start a new one from the credits page",
                payment.status.as_str()
            )));
        }
    }
    let session_id = payment
        .checkout_session_id
        .clone()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("sandbox payment {} has no session", payment.payment_id)))?;
    let secret = state.payments.webhook_secret.clone();
    let (body, signature) = webhook::sandbox_event(secret.expose(), &payment, &session_id);
    let outcome = webhook::verify_and_handle(&state.pool, secret.expose(), Some(&signature), &body).await?;
    tracing::info!(payment_id = %payment.payment_id, ?outcome, "sandbox payment");
    Ok(Redirect::to(&payment.href()).into_response())
}

async fn sandbox_cancel(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(raw_id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response> {
    let payment = own_sandbox_payment(&state, user.id, &raw_id).await?;
    payments::mark_canceled(&state.pool, user.id, payment.payment_id).await?;
    Ok(Redirect::to(&payment.href()).into_response())
}

#[derive(Deserialize, Default)]
struct ReturnQuery {
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    canceled: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "payments/show.html")]
struct PaymentPage {
    layout: Layout,
    payment: PaymentView,
    payment_id: Uuid,
    provider: String,
    paid_at: Option<String>,
    failure_reason: Option<String>,
    /// Shown while Stripe has not confirmed a returning buyer's payment yet.
    confirming: bool,
    /// The buyer left the checkout without paying.
    returned_unpaid: bool,
    /// Paid but not matched to the pack's price: waiting for review.
    under_review: bool,
}

/// `POST /credits/payments/{id}/cancel`: the buyer gives up a pending checkout (a canceled
/// payment can no longer be credited; starting a new checkout is one click on `/credits`).
async fn cancel_payment(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(raw_id): Path<String>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response> {
    let payment_id = AppError::parse_id(&raw_id, "payment")?;
    let payment = payments::get_user_payment(&state.pool, user.id, payment_id)
        .await?
        .ok_or_else(|| AppError::NotFound("we could not find that payment".into()))?;
    payments::mark_canceled(&state.pool, user.id, payment.payment_id).await?;
    Ok(Redirect::to(&payment.href()).into_response())
}

async fn payment_page(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    Path(raw_id): Path<String>,
    Query(query): Query<ReturnQuery>,
) -> Result<Response> {
    let user_id = user.id;
    let payment_id = AppError::parse_id(&raw_id, "payment")?;
    let not_found = || AppError::NotFound("we could not find that payment".into());
    let mut payment = payments::get_user_payment(&state.pool, user_id, payment_id).await?.ok_or_else(not_found)?;
    let mut confirming = false;

    // `?canceled=1`: the buyer came back through the provider's "back" link. A GET changes
    // nothing (any site could send a browser here): the page says the checkout was not
    // completed and offers to continue it or to cancel it (a form).
    let returned_unpaid = query.canceled.is_some();
    if let Some(session_id) = query.session_id.as_deref()
        && payment.status != Status::Paid
        && payment.provider == state.payments.provider.kind()
        && payment.checkout_session_id.as_deref() == Some(session_id)
    {
        // Stripe's success page: ask Stripe, and fulfil now rather than wait for the webhook.
        match state.payments.provider.retrieve_session(session_id).await {
            Ok(Some(session)) if session.payment_status == "paid" => {
                let mut tx = crate::db::begin(&state.pool).await?;
                let done = payments::fulfil(&mut tx, &session).await?;
                tx.commit().await?;
                if let Fulfilment::Ignored(reason) = done {
                    tracing::warn!(%payment_id, "success page did not fulfil: {reason}");
                }
            }
            Ok(_) => confirming = true,
            Err(err) => {
                tracing::warn!(%payment_id, "retrieving the checkout session failed: {err}");
                confirming = true;
            }
        }
    }
    if let Some(fresh) = payments::get_user_payment(&state.pool, user_id, payment_id).await? {
        payment = fresh;
    }
    let page = PaymentPage {
        payment: PaymentView::new(&payment),
        payment_id,
        provider: payment.provider.label().into(),
        paid_at: payment.paid_at.map(format_datetime),
        failure_reason: payment.failure_reason.clone(),
        confirming: confirming && payment.status == Status::Pending,
        returned_unpaid: returned_unpaid && payment.status == Status::Pending,
        under_review: payment.review_reason.is_some() && payment.status != Status::Paid,
        layout,
    };
    let mut response = render(&page);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_escaped() {
        assert_eq!(csv_field("plain", true), "plain");
        assert_eq!(csv_field("a,b", true), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines", true), "\"two\nlines\"");
        assert_eq!(csv_field("=1+1", true), "'=1+1");
        assert_eq!(csv_field("-5", false), "-5");
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1200), "1,200");
        assert_eq!(group(-1234567), "-1,234,567");
    }
}
