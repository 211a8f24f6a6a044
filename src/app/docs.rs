//! The API's description: the OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` attributes and the types' `ToSchema` derives (`Routes::api` collects them
//! while it builds the router, so the document cannot drift from the handlers), served at
//! `GET /api/v1/openapi.json`, and rendered by the app itself as the reference page
//! `GET /docs/api` (no CDN, no JavaScript).
//!
//! What every operation shares is added here once, so that adding an endpoint stays one
//! attribute and one line: the security scheme, the error responses every API request may get
//! (400, 401, 429, 503; 413, 415 and 422 for JSON bodies), the `X-RateLimit-*` headers on every
//! response, and the webhook events (`webhooks`).

use std::sync::OnceLock;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa_axum::routes;

use crate::{
    state::AppState,
    web::{
        Layout, Routes,
        error::{ApiError, ErrorCode},
        render,
    },
    webhooks::{CreditsLowEvent, EventType, JobFailedEvent, RunCompletedEvent, SIGNATURE_HEADER},
};

pub fn routes() -> Routes<AppState> {
    Routes::new().api(routes!(openapi_json)).route("/docs/api", get(reference_page))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Faceoff API", version = "1.0.0", description = include_str!("api_intro.md")),
    components(schemas(ApiError, ErrorCode, RunCompletedEvent, JobFailedEvent, CreditsLowEvent)),
    tags(
        (name = "account", description = "Who you are, your balance and your credit history."),
        (name = "catalog", description = "The models you can run, with their prices."),
        (name = "runs", description = "One prompt, 2–4 models: quote, start, list and read runs, download images."),
        (name = "webhooks", description = "Endpoints we POST events to, their deliveries and replays."),
        (name = "meta", description = "This description."),
    )
)]
struct Base;

/// The OpenAPI document (built once per process).
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut api = Base::openapi();
        api.merge(super::routes().openapi().clone());
        let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
        complete(&mut doc);
        doc
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// The shared parts (see the module docs).
fn complete(doc: &mut Value) {
    let components = doc["components"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut components = Value::Object(components);
    components["securitySchemes"] = json!({
        "api_key": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "fo_…",
            "description": "A personal API key from /account/api-keys: `Authorization: Bearer fo_…`.",
        }
    });
    components["headers"] = json!({
        "X-RateLimit-Limit": {"description": "Requests allowed per minute with this key.", "schema": {"type": "integer", "minimum": 1}},
        "X-RateLimit-Remaining": {"description": "Requests left now.", "schema": {"type": "integer", "minimum": 0}},
        "X-RateLimit-Reset": {"description": "Seconds until the full limit is available again.", "schema": {"type": "integer", "minimum": 0}},
        "Retry-After": {"description": "Seconds to wait before the next request.", "schema": {"type": "integer", "minimum": 1}},
    });
    let mut too_many = error_response("Too many requests with this key (`rate_limited`): wait `Retry-After` seconds.");
    too_many["headers"] = json!({"Retry-After": {"$ref": "#/components/headers/Retry-After"}});
    components["responses"] = json!({
        "BadRequest": error_response("Malformed: JSON that does not parse, text with NUL characters or invalid UTF-8, a malformed query (`bad_request`)."),
        "Unauthorized": error_response("No API key, or a revoked or unknown one (`unauthorized`)."),
        "RateLimited": too_many,
        "PayloadTooLarge": error_response("The body is too large (`payload_too_large`)."),
        "UnsupportedMediaType": error_response("The body is not `application/json` (`unsupported_media_type`)."),
        "InvalidInput": error_response("Missing or mistyped fields; the message names them (`invalid_input`)."),
        "Unavailable": error_response("Briefly unavailable (`unavailable`): retry shortly."),
    });
    doc["components"] = components;
    doc["security"] = json!([{"api_key": []}]);

    let rate_headers = json!({
        "X-RateLimit-Limit": {"$ref": "#/components/headers/X-RateLimit-Limit"},
        "X-RateLimit-Remaining": {"$ref": "#/components/headers/X-RateLimit-Remaining"},
        "X-RateLimit-Reset": {"$ref": "#/components/headers/X-RateLimit-Reset"},
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, operation) in item.iter_mut() {
                if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    continue;
                }
                split_summary(operation);
                // An optional parameter is left out, never null (`Option<T>` says "null" too).
                // (`get_mut`: indexing a missing key mutably would insert a null.)
                for parameter in operation.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(types) = parameter["schema"]["type"].as_array_mut() {
                        types.retain(|t| t != "null");
                        if types.len() == 1 {
                            parameter["schema"]["type"] = types[0].clone();
                        }
                    }
                }
                let public = operation["security"].as_array().is_some_and(|s| s.iter().all(|r| r == &json!({})));
                let has_body = operation.get("requestBody").is_some();
                let responses = operation["responses"].as_object_mut().map(std::mem::take).unwrap_or_default();
                let mut responses = responses;
                let mut shared = vec![("400", "BadRequest"), ("429", "RateLimited"), ("503", "Unavailable")];
                if !public {
                    shared.push(("401", "Unauthorized"));
                }
                if has_body {
                    shared.extend([
                        ("413", "PayloadTooLarge"),
                        ("415", "UnsupportedMediaType"),
                        ("422", "InvalidInput"),
                    ]);
                }
                for (status, name) in shared {
                    responses
                        .entry(status)
                        .or_insert_with(|| json!({"$ref": format!("#/components/responses/{name}")}));
                }
                for (status, response) in responses.iter_mut() {
                    if response.get("$ref").is_none() && response.get("description").is_none() {
                        let reason = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("The answer.");
                        response["description"] = json!(reason);
                    }
                }
                let mut sorted: Vec<(String, Value)> = responses.into_iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                for (_, response) in sorted.iter_mut() {
                    if response.get("$ref").is_none() {
                        let headers = response["headers"].as_object_mut().map(std::mem::take).unwrap_or_default();
                        let mut headers = Value::Object(headers);
                        for (name, header) in rate_headers.as_object().into_iter().flatten() {
                            headers[name] = header.clone();
                        }
                        response["headers"] = headers;
                    }
                }
                operation["responses"] = Value::Object(sorted.into_iter().collect());
            }
        }
    }
    // The shared responses carry the rate-limit headers too.
    if let Some(shared) = doc["components"]["responses"].as_object_mut() {
        for response in shared.values_mut() {
            let headers = response["headers"].as_object_mut().map(std::mem::take).unwrap_or_default();
            let mut headers = Value::Object(headers);
            for (name, header) in rate_headers.as_object().into_iter().flatten() {
                headers[name] = header.clone();
            }
            response["headers"] = headers;
        }
    }
    doc["webhooks"] = webhooks();
}

/// A handler's doc comment becomes its summary whole: keep its first sentence as the summary and
/// the rest as the description.
fn split_summary(operation: &mut Value) {
    let Some(text) = operation["summary"].as_str().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")) else {
        return;
    };
    let (summary, rest) = match text.find(". ") {
        Some(at) => (text[..=at].to_string(), text[at + 2..].to_string()),
        None => (text.clone(), String::new()),
    };
    operation["summary"] = json!(summary);
    let description = [rest, operation["description"].as_str().unwrap_or_default().to_string()]
        .into_iter()
        .filter(|part| !part.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    if !description.is_empty() {
        operation["description"] = json!(description);
    }
}

/// The events we POST to registered endpoints (OpenAPI 3.1 `webhooks`).
fn webhooks() -> Value {
    let mut hooks = Map::new();
    for (event, schema) in [
        (EventType::RunCompleted, "RunCompletedEvent"),
        (EventType::JobFailed, "JobFailedEvent"),
        (EventType::CreditsLow, "CreditsLowEvent"),
    ] {
        hooks.insert(
            event.as_str().to_string(),
            json!({"post": {
                "operationId": format!("webhook_{}", event.as_str().replace('.', "_")),
                "tags": ["webhooks"],
                "summary": format!("{}: {}", event.as_str(), event.description()),
                "description": "Sent to each endpoint subscribed to this event. Verify the signature before trusting the body, answer 2xx quickly; anything else is retried (30 s, 1 min, 2 min… doubling up to 6 h) for a day.",
                "security": [],
                "parameters": [
                    {"name": SIGNATURE_HEADER, "in": "header", "required": true,
                     "description": "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"{t}.{body}\" keyed with the endpoint's secret>`; a second `v1` during a rotation's overlap.",
                     "schema": {"type": "string"}, "example": "t=1767225600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"},
                    {"name": "Faceoff-Event-Type", "in": "header", "required": true, "schema": {"type": "string", "example": event.as_str()}},
                    {"name": "Faceoff-Delivery-Id", "in": "header", "required": true, "schema": {"type": "string", "format": "uuid"}},
                    {"name": "Faceoff-Delivery-Attempt", "in": "header", "required": true, "schema": {"type": "integer", "minimum": 1}},
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
                "responses": {"2XX": {"description": "Received."}},
            }}),
        );
    }
    Value::Object(hooks)
}

/// This document: the OpenAPI 3.1 description of the API (no key needed).
#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json", body = serde_json::Value))
)]
async fn openapi_json() -> Response {
    let mut response = Json(document()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

async fn reference_page(State(state): State<AppState>, layout: Layout) -> Response {
    render(&reference::ReferencePage::build(layout, document(), &state.config.absolute_url("")))
}

pub mod reference;
