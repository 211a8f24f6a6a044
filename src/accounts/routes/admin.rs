//! `GET /admin` (find a user by email: balance and recent history) and `POST /admin/adjust`
//! (add or remove credits, with a reason and an idempotency key), for administrators only. The
//! page also lists the open reports of published runs (hide and dismiss: `sharing::pages`).

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use super::form_error;
use crate::{
    accounts::{
        self,
        admin::{self, AdjustError},
    },
    ledger,
    state::AppState,
    web::{Admin, CsrfForm, Layout, Result, Routes, render},
};

pub fn routes() -> Routes<AppState> {
    Routes::new().route("/admin", get(admin_page)).route("/admin/adjust", post(admin_adjust))
}

struct FoundUser {
    email: String,
    role: &'static str,
    balance: ledger::Balance,
    history: Vec<ledger::HistoryLine>,
}

#[derive(askama::Template)]
#[template(path = "accounts/admin.html")]
struct AdminPage {
    layout: Layout,
    query: String,
    found: Option<FoundUser>,
    not_found: bool,
    amount: String,
    reason: String,
    idempotency_key: String,
    notice: Option<String>,
    form_error: Option<String>,
    amount_error: Option<String>,
    reason_error: Option<String>,
    /// Open reports of published runs, oldest first.
    reports: Vec<crate::sharing::OpenReport>,
}

impl AdminPage {
    fn new(layout: Layout, query: String) -> Self {
        AdminPage {
            layout,
            query,
            found: None,
            not_found: false,
            amount: String::new(),
            reason: String::new(),
            idempotency_key: Uuid::new_v4().to_string(),
            notice: None,
            form_error: None,
            amount_error: None,
            reason_error: None,
            reports: Vec::new(),
        }
    }

    async fn look_up(&mut self, pool: &sqlx::PgPool) -> Result<()> {
        self.found = None;
        self.not_found = false;
        self.reports = crate::sharing::open_reports(pool, 50).await?;
        if self.query.is_empty() {
            return Ok(());
        }
        match accounts::find_by_email(pool, &self.query).await? {
            Some(user) => {
                let balance = ledger::balance(pool, user.id).await?;
                let history = ledger::history(pool, user.id, 10, 0).await?;
                self.query = user.email.clone();
                self.found = Some(FoundUser { email: user.email, role: user.role.as_str(), balance, history });
            }
            None => self.not_found = true,
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct AdminQuery {
    email: Option<String>,
    notice: Option<String>,
}

async fn admin_page(
    State(state): State<AppState>,
    Admin(_): Admin,
    layout: Layout,
    Query(q): Query<AdminQuery>,
) -> Result<Response> {
    let mut page = AdminPage::new(layout, q.email.as_deref().map(accounts::normalize_email).unwrap_or_default());
    page.look_up(&state.pool).await?;
    page.notice = match q.notice.as_deref() {
        Some("hidden") => Some("The run was hidden: its public page, images and card answer 404 now.".into()),
        Some("dismissed") => Some("The report was dismissed.".into()),
        _ => page.notice,
    };
    Ok(render(&page))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AdjustForm {
    email: String,
    amount: String,
    reason: String,
    idempotency_key: String,
}

async fn admin_adjust(
    State(state): State<AppState>,
    Admin(_): Admin,
    layout: Layout,
    CsrfForm(form): CsrfForm<AdjustForm>,
) -> Result<Response> {
    let mut page = AdminPage::new(layout, accounts::normalize_email(&form.email));
    page.amount = form.amount.trim().to_string();
    page.reason = form.reason.trim().to_string();
    // The form's own key: a double submit of the same form adjusts once. A key that is missing
    // or malformed is refused (a fresh one would make a double submit adjust twice).
    let key = form.idempotency_key.trim();
    if !admin::valid_key(key) {
        page.look_up(&state.pool).await?;
        page.form_error =
            Some("This form is damaged or expired: reload the page and enter the adjustment again.".into());
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    page.idempotency_key = key.to_string();
    let amount = match page.amount.parse::<i64>() {
        Ok(n) if admin::valid_amount(n) => Some(n),
        _ => {
            page.amount_error =
                Some("enter a whole number of credits, not zero: positive adds, negative removes".into());
            None
        }
    };
    if page.reason.is_empty() {
        page.reason_error = Some("say why (it is shown in the user's credit history)".into());
    } else if page.reason.chars().count() > admin::MAX_REASON_CHARS {
        page.reason_error = Some(format!("keep the reason under {} characters", admin::MAX_REASON_CHARS));
    }
    let (Some(amount), None) = (amount, &page.reason_error) else {
        page.look_up(&state.pool).await?;
        return Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page));
    };
    let result = admin::adjust_credits(&state.pool, &page.query, amount, &page.reason, &page.idempotency_key).await;
    match result {
        Ok(done) => {
            let verb = if done.amount > 0 { "Added" } else { "Removed" };
            page.notice = Some(format!(
                "{verb} {} credits {} {}. Available balance now: {}.",
                done.amount.abs(),
                if done.amount > 0 { "to" } else { "from" },
                done.email,
                done.balance.available
            ));
            // The next adjustment is a new one.
            page.idempotency_key = Uuid::new_v4().to_string();
            page.amount.clear();
            page.reason.clear();
            page.look_up(&state.pool).await?;
            Ok(render(&page))
        }
        Err(AdjustError::Insufficient { need, have }) => {
            page.amount_error = Some(format!(
                "cannot remove {need} credits: the user has only {have} available (held credits excluded)"
            ));
            page.look_up(&state.pool).await?;
            Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        Err(err @ (AdjustError::UnknownUser(_) | AdjustError::KeyConflict)) => {
            page.amount_error = Some(err.to_string());
            page.idempotency_key = Uuid::new_v4().to_string();
            page.look_up(&state.pool).await?;
            Ok(form_error(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        Err(err) => Err(err.into()),
    }
}
