//! `GET/POST /account/api-keys`: the user's personal API keys (create one, shown once; revoke).

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    accounts::{
        self,
        api_keys::{self, ApiKey, MAX_ACTIVE_KEYS},
        password,
    },
    state::AppState,
    web::{AppError, CsrfForm, Layout, Result, Routes, SignedIn, render},
};

pub fn routes() -> Routes<AppState> {
    Routes::new().route("/account/api-keys", get(keys_page).post(keys_post))
}

pub struct KeyRow {
    pub api_key_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: Option<String>,
    pub revoked: bool,
}

impl From<ApiKey> for KeyRow {
    fn from(key: ApiKey) -> Self {
        KeyRow {
            api_key_id: key.api_key_id,
            name: key.name,
            prefix: key.prefix,
            created: fmt_time(key.created_at),
            last_used: key.last_used_at.map(fmt_time),
            revoked: key.revoked_at.is_some(),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "accounts/api_keys.html")]
pub struct KeysPage {
    pub layout: Layout,
    pub keys: Vec<KeyRow>,
    pub new_secret: Option<String>,
    pub name: String,
    pub error: Option<String>,
    pub password_error: Option<String>,
}

/// Checks the signed-in user's password (throttled per user like the password change); the
/// message for the form when it is not theirs.
async fn check_password(state: &AppState, user_id: Uuid, password: String) -> Result<Option<String>> {
    if password.is_empty() {
        return Ok(Some("enter your password to create a key".into()));
    }
    state.throttle.check_password_change(user_id).await?;
    let user = accounts::find_by_id(&state.pool, user_id).await?.ok_or(AppError::Unauthorized)?;
    if password::verify(password, Some(user.password_hash)).await? {
        state.throttle.password_change_succeeded(user_id).await;
        Ok(None)
    } else {
        state.throttle.password_change_failed(user_id).await;
        Ok(Some("that is not your password".into()))
    }
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap_or_default()
}

async fn load_keys(state: &AppState, user_id: Uuid) -> Result<Vec<KeyRow>> {
    Ok(api_keys::list(&state.pool, user_id).await?.into_iter().map(KeyRow::from).collect())
}

/// `GET /account/api-keys`.
async fn keys_page(State(state): State<AppState>, SignedIn(user): SignedIn, layout: Layout) -> Result<Response> {
    let keys = load_keys(&state, user.id).await?;
    Ok(render(&KeysPage { layout, keys, new_secret: None, name: String::new(), error: None, password_error: None }))
}

#[derive(Deserialize)]
struct KeysForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    api_key_id: String,
}

/// `POST /account/api-keys`: `action=create` (fields `name` and `password`: a key acts as the
/// user until revoked, so a borrowed session must not be able to mint one) shows the new key
/// once; `action=revoke` (field `api_key_id`) revokes one.
async fn keys_post(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    layout: Layout,
    CsrfForm(form): CsrfForm<KeysForm>,
) -> Result<Response> {
    match form.action.as_str() {
        "revoke" => {
            let id = AppError::parse_id(&form.api_key_id, "API key")?;
            if !api_keys::revoke(&state.pool, user.id, id).await? {
                return Err(AppError::NotFound("we could not find that API key".into()));
            }
            // Refused here from now on (other instances drop it on the trigger's notification).
            state.api_keys.forget_all();
            Ok(Redirect::to("/account/api-keys").into_response())
        }
        "create" => {
            let name = form.name.trim().to_string();
            let mut error = api_keys::validate_name(&name).err();
            if error.is_none() && api_keys::active_count(&state.pool, user.id).await? >= MAX_ACTIVE_KEYS {
                error = Some(format!("you have {MAX_ACTIVE_KEYS} active keys; revoke one first"));
            }
            let mut password_error = None;
            if error.is_none() {
                password_error = check_password(&state, user.id, form.password).await?;
            }
            if error.is_some() || password_error.is_some() {
                let keys = load_keys(&state, user.id).await?;
                let page = KeysPage { layout, keys, new_secret: None, name, error, password_error };
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
            }
            let secret = api_keys::create(&state.pool, user.id, &name).await?;
            let keys = load_keys(&state, user.id).await?;
            let page = KeysPage {
                layout,
                keys,
                new_secret: Some(secret),
                name: String::new(),
                error: None,
                password_error: None,
            };
            let mut response = render(&page);
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        _ => Err(AppError::BadRequest("unknown action".into())),
    }
}
