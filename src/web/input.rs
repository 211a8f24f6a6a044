//! Input that cannot be stored never reaches a handler: PostgreSQL refuses U+0000 in text, and
//! bytes that are not UTF-8 are not text. Decided here, once, for every request:
//!
//! - [`reject_unstorable_uri`] (middleware): the path and the query string, percent-decoded;
//! - form bodies in `web::csrf` ([`check_form_body`], [`check_text`] for multipart fields);
//! - JSON bodies through [`ApiJson`], which also tells malformed JSON (400, `bad_request`) from
//!   well-formed JSON with missing or mistyped fields (422, `invalid_input`).
//!
//! All are a 400 with a message, never a 500 and never a half-done write.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use percent_encoding::percent_decode;
use serde::de::DeserializeOwned;

use crate::web::error::AppError;

const NUL: &str = "text may not contain NUL characters";
const NOT_UTF8: &str = "text must be valid UTF-8";

/// Checks one value as the application would store it.
pub fn check_text(value: &str) -> Result<(), AppError> {
    if value.contains('\0') { Err(AppError::BadRequest(NUL.into())) } else { Ok(()) }
}

/// Checks raw (percent-decoded) bytes: UTF-8 without NUL.
fn check_bytes(bytes: &[u8], what: &str) -> Result<(), AppError> {
    match std::str::from_utf8(bytes) {
        Err(_) => Err(AppError::BadRequest(format!("{what}: {NOT_UTF8}"))),
        Ok(text) if text.contains('\0') => Err(AppError::BadRequest(format!("{what}: {NUL}"))),
        Ok(_) => Ok(()),
    }
}

/// Checks every name and value of an `application/x-www-form-urlencoded` body or query string.
pub fn check_form_body(bytes: &[u8], what: &str) -> Result<(), AppError> {
    for pair in bytes.split(|&b| b == b'&') {
        for part in pair.splitn(2, |&b| b == b'=') {
            // `+` is a space in forms: it cannot hide a NUL or broken UTF-8.
            let decoded: Vec<u8> = percent_decode(part).collect();
            check_bytes(&decoded, what)?;
        }
    }
    Ok(())
}

/// Middleware: refuses a request whose path or query string holds a NUL or bytes that are not
/// UTF-8 once percent-decoded (`/media/%00`, `?email=%FF`).
pub async fn reject_unstorable_uri(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let decoded: Vec<u8> = percent_decode(uri.path().as_bytes()).collect();
    if let Err(err) = check_bytes(&decoded, "the address") {
        return err.into_response();
    }
    if let Some(query) = uri.query()
        && let Err(err) = check_form_body(query.as_bytes(), "the address")
    {
        return err.into_response();
    }
    next.run(request).await
}

/// A JSON body for the API, with clear errors: not JSON at all (or not UTF-8) is 400
/// `bad_request`; a NUL in any string is 400; the wrong fields or types are 422
/// `invalid_input` with serde's explanation (also when the body is not an object); another
/// content type is 415.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if !is_json {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| AppError::rejected(rejection.status(), rejection.body_text()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|err| AppError::BadRequest(format!("the body is not valid JSON: {err}")))?;
        if let Some(path) = nul_in(&value, "") {
            return Err(AppError::BadRequest(format!("{}: {NUL}", if path.is_empty() { "the body" } else { &path })));
        }
        // Every API body is an object (serde would otherwise read a struct from a list).
        if !value.is_object() {
            return Err(AppError::Unprocessable("the body must be a JSON object".into()));
        }
        serde_json::from_value(value).map(ApiJson).map_err(|err| AppError::Unprocessable(err.to_string()))
    }
}

/// The path of the first string (or object key) in `value` holding a NUL.
fn nul_in(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(path.to_string()),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_in(item, &format!("{path}[{i}]")))
        }
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            if key.contains('\0') { Some(here) } else { nul_in(item, &here) }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_with_nul_or_broken_utf8_are_refused() {
        assert!(check_form_body(b"email=ann%40example.com&password=x+y", "form").is_ok());
        assert!(check_form_body(b"email=ann%00", "form").is_err());
        assert!(check_form_body(b"email=%FF%FE", "form").is_err());
        assert!(check_form_body(b"na%00me=x", "form").is_err());
        assert!(check_form_body(b"email=caf%C3%A9", "form").is_ok());
        assert!(check_form_body(b"", "form").is_ok());
    }

    #[test]
    fn nul_is_found_anywhere_in_json() {
        let ok = serde_json::json!({"prompt": "fine", "models": ["a", "b"]});
        assert_eq!(nul_in(&ok, ""), None);
        let bad = serde_json::json!({"prompt": "fine", "models": ["a", "b\u{0}"]});
        assert_eq!(nul_in(&bad, "").as_deref(), Some("models[1]"));
        let key = serde_json::json!({"x\u{0}": 1});
        assert!(nul_in(&key, "").is_some());
    }
}
