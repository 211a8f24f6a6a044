//! The BFL adapter against an in-process mock of api.bfl.ai (a small axum app): submission on
//! one port, polling and delivery on another, scripted statuses and faults.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::*;
use crate::providers::Mode;

/// One scripted answer of the polling endpoint.
#[derive(Clone)]
enum Reply {
    Http(u16),
    Status(&'static str),
    Progress(&'static str, f64),
    Ready,
    ReadyWithoutSample,
    Moderated(&'static str, Vec<&'static str>),
}

#[derive(Default)]
struct Mock {
    /// Status codes the submit endpoint answers before accepting.
    submit_faults: VecDeque<u16>,
    /// What polling answers, in order (the last one repeats).
    script: VecDeque<Reply>,
    bodies: Vec<Value>,
    submit_keys: Vec<Option<String>>,
    polls: usize,
    poll_keys: Vec<Option<String>>,
    deliveries: usize,
    delivery_saw_key: bool,
    delivery_expired: bool,
    poll_base: String,
}

type Shared = Arc<Mutex<Mock>>;

fn key(headers: &HeaderMap) -> Option<String> {
    headers.get("x-key").and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn submit(
    State(mock): State<Shared>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut m = mock.lock().expect("mock");
    m.submit_keys.push(key(&headers));
    if key(&headers).as_deref() != Some("test-key") {
        return (StatusCode::FORBIDDEN, Json(json!({"detail": "Not authenticated"}))).into_response();
    }
    if let Some(code) = m.submit_faults.pop_front() {
        let body = match code {
            422 => {
                json!({"detail": [{"loc": ["body", "width"], "msg": "must be a multiple of 16", "type": "value_error"}]})
            }
            402 => json!({"detail": "Insufficient credits"}),
            _ => json!({"detail": "busy"}),
        };
        return (StatusCode::from_u16(code).expect("code"), Json(body)).into_response();
    }
    m.bodies.push(json!({"endpoint": endpoint, "body": body}));
    let id = format!("task-{}", m.bodies.len());
    let polling_url = format!("{}/v1/get_result?id={id}", m.poll_base);
    Json(json!({"id": id, "polling_url": polling_url, "cost": 4.5, "input_mp": 0, "output_mp": 1.98})).into_response()
}

async fn get_result(
    State(mock): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut m = mock.lock().expect("mock");
    m.polls += 1;
    m.poll_keys.push(key(&headers));
    let id = q.get("id").cloned().unwrap_or_default();
    let reply = if m.script.len() > 1 { m.script.pop_front() } else { m.script.front().cloned() };
    let sample = format!("{}/delivery/{id}.jpeg?se=2026&sig=secret", m.poll_base);
    match reply.unwrap_or(Reply::Status("Pending")) {
        Reply::Http(code) => {
            (StatusCode::from_u16(code).expect("code"), Json(json!({"detail": "oops"}))).into_response()
        }
        Reply::Status(s) => Json(json!({"id": id, "status": s, "result": null, "progress": null})).into_response(),
        Reply::Progress(s, p) => Json(json!({"id": id, "status": s, "result": null, "progress": p})).into_response(),
        Reply::Ready => {
            Json(json!({"id": id, "status": "Ready", "result": {"sample": sample, "seed": 42, "prompt": "x"}}))
                .into_response()
        }
        Reply::ReadyWithoutSample => Json(json!({"id": id, "status": "Ready", "result": {"seed": 42}})).into_response(),
        Reply::Moderated(s, reasons) => {
            Json(json!({"id": id, "status": s, "result": null, "details": {"Moderation Reasons": reasons}}))
                .into_response()
        }
    }
}

async fn delivery(State(mock): State<Shared>, headers: HeaderMap) -> Response {
    let mut m = mock.lock().expect("mock");
    m.deliveries += 1;
    if headers.contains_key("x-key") {
        m.delivery_saw_key = true;
        return (StatusCode::BAD_REQUEST, "x-key must not be sent to the delivery host").into_response();
    }
    if m.delivery_expired {
        return (StatusCode::FORBIDDEN, "AuthenticationFailed: signature expired").into_response();
    }
    ([("content-type", "image/jpeg")], sample_jpeg(96, 64)).into_response()
}

/// Starts the mock: the API (submit) on one port, polling + delivery on another.
async fn start(configure: impl FnOnce(&mut Mock)) -> (Shared, BflProvider) {
    let mock: Shared = Arc::default();
    let api = Router::new().route("/v1/{endpoint}", post(submit)).with_state(mock.clone());
    let cluster = Router::new()
        .route("/v1/get_result", get(get_result))
        .route("/delivery/{file}", get(delivery))
        .with_state(mock.clone());
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cluster_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = api_listener.local_addr().expect("addr");
    let cluster_addr = cluster_listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(api_listener, api).await });
    tokio::spawn(async move { axum::serve(cluster_listener, cluster).await });
    {
        let mut m = mock.lock().expect("mock");
        m.poll_base = format!("http://{cluster_addr}");
        configure(&mut m);
    }
    let base = Url::parse(&format!("http://{api_addr}")).expect("url");
    (mock, BflProvider::new(Secret::new("test-key"), base).expect("provider"))
}

fn request(endpoint: &str, aspect: &str) -> GenerationRequest {
    let (width, height) = crate::providers::dimensions(aspect, Mode::TwoK).expect("ratio");
    GenerationRequest {
        endpoint: endpoint.into(),
        model: "flux-2".into(),
        model_name: "Flux 2".into(),
        prompt: "a candid café portrait".into(),
        seed: 1234,
        mode: Mode::TwoK,
        aspect_ratio: aspect.into(),
        width,
        height,
        reference_image: None,
    }
}

/// Polls like the worker does (without sleeping) until a terminal answer; returns every answer.
async fn poll_until_done(
    provider: &BflProvider,
    req: &GenerationRequest,
    sub: &Submission,
) -> Vec<Result<Poll, ProviderError>> {
    let mut seen = Vec::new();
    for _ in 0..20 {
        let answer = provider.poll(req, sub).await;
        let done = matches!(
            answer,
            Ok(Poll::Ready(_) | Poll::Moderated { .. } | Poll::Failed { .. }) | Err(ProviderError::Fatal(_))
        );
        seen.push(answer);
        if done {
            break;
        }
    }
    seen
}

#[tokio::test]
async fn flux2_happy_path_follows_the_polling_url_and_downloads_without_the_key() {
    let (mock, provider) = start(|m| {
        m.script = VecDeque::from([
            Reply::Progress("Pending", 0.2),
            Reply::Progress("Generating", 45.0),
            Reply::Status("Reasoning"),
            Reply::Ready,
        ]);
    })
    .await;
    let mut req = request("flux-2-pro", "16:9");
    req.reference_image = Some(sample_jpeg(32, 32));
    let sub = provider.submit(&req).await.expect("submitted");
    assert_eq!(sub.task_id, "task-1");
    assert_eq!(sub.cost, Some(4.5));
    let polling = sub.polling_url.clone().expect("polling url");
    assert!(polling.starts_with(&mock.lock().expect("mock").poll_base), "{polling}");

    let answers = poll_until_done(&provider, &req, &sub).await;
    assert_eq!(answers.len(), 4);
    assert!(matches!(answers[0], Ok(Poll::Pending { progress: Some(p) }) if (p - 0.2).abs() < 1e-6));
    // A percentage is normalised; unknown statuses are in progress.
    assert!(matches!(answers[1], Ok(Poll::Pending { progress: Some(p) }) if (p - 0.45).abs() < 1e-6));
    assert!(matches!(answers[2], Ok(Poll::Pending { progress: None })));
    match &answers[3] {
        Ok(Poll::Ready(image)) => {
            assert_eq!((image.width, image.height), (96, 64));
            assert_eq!(image.content_type, "image/jpeg");
        }
        other => panic!("expected an image, got {other:?}"),
    }

    let m = mock.lock().expect("mock");
    assert_eq!(m.polls, 4, "polling went to the polling_url's host and port");
    assert!(m.poll_keys.iter().all(|k| k.as_deref() == Some("test-key")));
    assert_eq!(m.deliveries, 1);
    assert!(!m.delivery_saw_key, "the delivery request must not carry x-key");
    let sent = &m.bodies[0];
    assert_eq!(sent["endpoint"], "flux-2-pro");
    let body = &sent["body"];
    let (w, h) = (body["width"].as_u64().expect("width"), body["height"].as_u64().expect("height"));
    assert!(w % 16 == 0 && h % 16 == 0 && w > h && w * h <= 4 * 1024 * 1024, "{w}x{h}");
    assert_eq!(body["seed"], 1234);
    assert!(body["input_image"].as_str().is_some_and(|s| s.len() > 100), "reference sent as base64");
    assert!(body.get("aspect_ratio").is_none() && body.get("image_prompt").is_none());
}

#[tokio::test]
async fn each_endpoint_family_gets_its_own_fields() {
    let (mock, provider) = start(|_| {}).await;
    let mut ultra = request("flux-pro-1.1-ultra", "21:9");
    ultra.reference_image = Some(sample_jpeg(16, 16));
    provider.submit(&ultra).await.expect("ultra");
    let mut kontext = request("flux-kontext-pro", "4:3");
    kontext.reference_image = Some(sample_jpeg(16, 16));
    provider.submit(&kontext).await.expect("kontext");
    provider.submit(&request("flux-pro-1.1", "9:16")).await.expect("pro 1.1");

    let m = mock.lock().expect("mock");
    let ultra = &m.bodies[0]["body"];
    assert_eq!(ultra["aspect_ratio"], "21:9");
    assert!(ultra["image_prompt"].is_string());
    assert!(ultra.get("width").is_none() && ultra.get("input_image").is_none());
    let kontext = &m.bodies[1]["body"];
    assert_eq!(kontext["aspect_ratio"], "4:3");
    assert!(kontext["input_image"].is_string() && kontext.get("width").is_none());
    let pro = &m.bodies[2]["body"];
    let (w, h) = (pro["width"].as_u64().expect("w"), pro["height"].as_u64().expect("h"));
    assert!(w % 32 == 0 && h % 32 == 0 && (256..=1440).contains(&w) && (256..=1440).contains(&h), "{w}x{h}");
    assert!(h > w);
    assert!(m.submit_keys.iter().all(|k| k.as_deref() == Some("test-key")));
}

#[tokio::test]
async fn moderation_carries_the_reasons() {
    let (_mock, provider) =
        start(|m| m.script = VecDeque::from([Reply::Moderated("Content Moderated", vec!["Derivative Works Filter"])]))
            .await;
    let req = request("flux-2-pro", "1:1");
    let sub = provider.submit(&req).await.expect("submitted");
    match provider.poll(&req, &sub).await {
        Ok(Poll::Moderated { reason }) => {
            assert!(reason.contains("Derivative Works Filter"), "{reason}");
            assert!(reason.contains("generated image"), "{reason}");
        }
        other => panic!("expected moderation, got {other:?}"),
    }
    let (_mock, provider) = start(|m| m.script = VecDeque::from([Reply::Moderated("Request Moderated", vec![])])).await;
    let sub = provider.submit(&req).await.expect("submitted");
    assert!(matches!(provider.poll(&req, &sub).await, Ok(Poll::Moderated { reason }) if reason.contains("prompt")));
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_transient_402_and_422_fatal() {
    let (mock, provider) = start(|m| {
        m.submit_faults = VecDeque::from([429, 500, 503, 402, 422]);
        m.script = VecDeque::from([Reply::Http(500), Reply::Http(429), Reply::Http(502), Reply::Ready]);
    })
    .await;
    let req = request("flux-2-pro", "1:1");
    assert!(matches!(provider.submit(&req).await, Err(ProviderError::Transient(_))));
    assert!(matches!(provider.submit(&req).await, Err(ProviderError::Transient(_))));
    assert!(matches!(provider.submit(&req).await, Err(ProviderError::Transient(_))));
    assert!(matches!(provider.submit(&req).await, Err(ProviderError::Fatal(m)) if m.contains("402")));
    match provider.submit(&req).await {
        Err(ProviderError::Fatal(m)) => assert!(m.contains("422") && m.contains("multiple of 16"), "{m}"),
        other => panic!("expected fatal, got {other:?}"),
    }
    let sub = provider.submit(&req).await.expect("accepted after the burst");
    let answers = poll_until_done(&provider, &req, &sub).await;
    assert!(matches!(answers[0], Err(ProviderError::Transient(_))));
    assert!(matches!(answers[1], Err(ProviderError::Transient(_))));
    assert!(matches!(answers[2], Err(ProviderError::Transient(_))));
    assert!(matches!(answers[3], Ok(Poll::Ready(_))));
    assert_eq!(mock.lock().expect("mock").bodies.len(), 1, "only the accepted submission was recorded");
}

#[tokio::test]
async fn wrong_key_is_fatal() {
    let (_mock, provider) = start(|_| {}).await;
    let provider = BflProvider { key: Secret::new("wrong"), ..provider };
    assert!(
        matches!(provider.submit(&request("flux-2-pro", "1:1")).await, Err(ProviderError::Fatal(m)) if m.contains("403"))
    );
}

#[tokio::test]
async fn a_result_without_sample_is_retried() {
    let (_mock, provider) = start(|m| m.script = VecDeque::from([Reply::ReadyWithoutSample, Reply::Ready])).await;
    let req = request("flux-2-pro", "1:1");
    let sub = provider.submit(&req).await.expect("submitted");
    assert!(matches!(provider.poll(&req, &sub).await, Err(ProviderError::Transient(m)) if m.contains("sample")));
    assert!(matches!(provider.poll(&req, &sub).await, Ok(Poll::Ready(_))));
}

#[tokio::test]
async fn an_expired_delivery_url_fails_the_job() {
    let (_mock, provider) = start(|m| {
        m.script = VecDeque::from([Reply::Ready]);
        m.delivery_expired = true;
    })
    .await;
    let req = request("flux-2-pro", "1:1");
    let sub = provider.submit(&req).await.expect("submitted");
    match provider.poll(&req, &sub).await {
        Err(ProviderError::Fatal(m)) => {
            assert!(m.contains("expired"), "{m}");
            assert!(!m.contains("secret"), "the signed URL must not leak into messages: {m}");
        }
        other => panic!("expected an expiry failure, got {other:?}"),
    }
}

#[tokio::test]
async fn error_and_task_not_found() {
    let (_mock, provider) = start(|m| m.script = VecDeque::from([Reply::Status("Error")])).await;
    let req = request("flux-2-pro", "1:1");
    let sub = provider.submit(&req).await.expect("submitted");
    assert!(matches!(provider.poll(&req, &sub).await, Ok(Poll::Failed { .. })));

    let (_mock, provider) = start(|m| m.script = VecDeque::from([Reply::Status("Task not found")])).await;
    let sub = provider.submit(&req).await.expect("submitted");
    // Right after submission: replication lag, keep polling.
    assert!(matches!(provider.poll(&req, &sub).await, Ok(Poll::Pending { .. })));
    let old = Submission { submitted_at_ms: sub.submitted_at_ms - 120_000, ..sub };
    assert!(matches!(provider.poll(&req, &old).await, Ok(Poll::Failed { reason }) if reason.contains("no longer")));
}

#[tokio::test]
async fn urls_outside_bfl_are_refused() {
    let (mock, provider) = start(|_| {}).await;
    let req = request("flux-2-pro", "1:1");
    let foreign = Submission {
        task_id: "x".into(),
        polling_url: Some("http://evil.example/v1/get_result?id=x".into()),
        cost: None,
        submitted_at_ms: now_ms(),
    };
    assert!(matches!(provider.poll(&req, &foreign).await, Err(ProviderError::Fatal(_))));
    let foreign = Submission { polling_url: Some("https://evil.example/v1/get_result?id=x".into()), ..foreign };
    assert!(
        matches!(provider.poll(&req, &foreign).await, Err(ProviderError::Fatal(_))),
        "x-key only goes to bfl hosts"
    );
    assert!(matches!(provider.download("http://evil.example/a.jpeg").await, Err(ProviderError::Fatal(_))));
    assert!(matches!(provider.download("file:///etc/passwd").await, Err(ProviderError::Fatal(_))));
    assert_eq!(mock.lock().expect("mock").polls, 0);
}

#[test]
fn sizes_fit_each_family() {
    assert_eq!(flux2_size(2000, 2000), (2000, 2000));
    let (w, h) = flux2_size(4096, 4096);
    assert!(w * h <= 4 * 1024 * 1024 && w % 16 == 0);
    assert_eq!(pro11_size(1920, 1088).0, 1440);
    let (w, h) = pro11_size(1000, 4000);
    assert_eq!((w, h), (352, 1440));
    assert_eq!(pro11_size(1, 4000).0, 256);
}
