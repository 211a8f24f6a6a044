//! The Replicate adapter against an in-process wiremock server that answers as the predictions
//! API does (`providers.md` §2.1, §2.3).

use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

use super::*;
use crate::providers::{Mode, http::sample_png};

const CREATE: &str = "/models/luma/photon/predictions";
const GET: &str = "/predictions/p-1";

fn request() -> GenerationRequest {
    GenerationRequest {
        endpoint: "luma/photon".into(),
        model: "luma-photon".into(),
        model_name: "Luma Photon".into(),
        prompt: "a ceramic mug on a windowsill, morning light".into(),
        seed: 3,
        mode: Mode::TwoK,
        aspect_ratio: "16:9".into(),
        width: 1888,
        height: 1056,
        reference_image: None,
    }
}

fn provider(server: &MockServer) -> ReplicateProvider {
    let base = Url::parse(&format!("{}/", server.uri())).expect("url");
    ReplicateProvider::with_timeout(Secret::new("r8_test"), base, Duration::from_millis(1500)).expect("client")
}

fn prediction(server: &MockServer, status: &str, output: Value, error: Value) -> ResponseTemplate {
    let uri = server.uri();
    ResponseTemplate::new(201).set_body_json(json!({
        "id": "p-1", "model": "luma/photon", "version": "hidden", "input": {}, "logs": "",
        "output": output, "error": error, "status": status, "created_at": "2026-11-29T07:00:00Z",
        "urls": {"get": format!("{uri}{GET}"), "cancel": format!("{uri}{GET}/cancel"), "web": "https://replicate.com/p/p-1"}
    }))
}

async fn create(server: &MockServer) {
    let answer = prediction(server, "starting", Value::Null, Value::Null);
    Mock::given(method("POST"))
        .and(path(CREATE))
        .and(header("authorization", "Bearer r8_test"))
        .respond_with(answer)
        .mount(server)
        .await;
}

async fn get(server: &MockServer, answer: ResponseTemplate, times: Option<u64>) {
    let mock = Mock::given(method("GET")).and(path(GET)).respond_with(answer);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

fn succeeded(server: &MockServer) -> ResponseTemplate {
    prediction(server, "succeeded", json!(format!("{}/delivery/out.png", server.uri())), Value::Null)
}

async fn delivery(server: &MockServer, answer: ResponseTemplate) {
    Mock::given(method("GET")).and(path("/delivery/out.png")).respond_with(answer).mount(server).await;
}

fn png() -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("content-type", "image/png").set_body_bytes(sample_png(64, 36).to_vec())
}

async fn run(provider: &ReplicateProvider) -> Result<Poll, ProviderError> {
    let request = request();
    let submission = provider.submit(&request).await?;
    for _ in 0..5 {
        match provider.poll(&request, &submission).await? {
            Poll::Pending { .. } => continue,
            other => return Ok(other),
        }
    }
    Ok(Poll::Pending { progress: None })
}

#[tokio::test]
async fn a_prediction_succeeds_and_its_output_is_downloaded() {
    let server = MockServer::start().await;
    create(&server).await;
    get(&server, prediction(&server, "processing", Value::Null, Value::Null), Some(1)).await;
    get(&server, succeeded(&server), None).await;
    delivery(&server, png()).await;
    let adapter = provider(&server);
    let request = request();
    let submission = adapter.submit(&request).await.expect("created");
    assert_eq!(submission.task_id, "p-1");
    assert!(matches!(adapter.poll(&request, &submission).await, Ok(Poll::Pending { .. })));
    let Ok(Poll::Ready(image)) = adapter.poll(&request, &submission).await else { panic!("not ready") };
    assert_eq!((image.width, image.height), (64, 36));

    let sent = &server.received_requests().await.expect("requests")[0];
    assert_eq!(sent.headers.get("prefer").and_then(|v| v.to_str().ok()), Some("wait=5"));
    let body: Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(body["input"]["prompt"], "a ceramic mug on a windowsill, morning light");
    assert_eq!(body["input"]["aspect_ratio"], "16:9");

    // An array output works the same.
    let server = MockServer::start().await;
    create(&server).await;
    let list = json!([format!("{}/delivery/out.png", server.uri())]);
    get(&server, prediction(&server, "succeeded", list, Value::Null), None).await;
    delivery(&server, png()).await;
    assert!(matches!(run(&provider(&server)).await, Ok(Poll::Ready(_))));
}

#[tokio::test]
async fn a_flagged_prediction_is_moderation_and_other_failures_are_not() {
    let server = MockServer::start().await;
    create(&server).await;
    get(
        &server,
        prediction(&server, "failed", Value::Null, json!("NSFW content detected. Try a different prompt.")),
        None,
    )
    .await;
    assert!(matches!(run(&provider(&server)).await, Ok(Poll::Moderated { reason }) if reason.contains("NSFW")));

    for (status, error, expected) in [
        ("failed", json!("CUDA out of memory"), "CUDA out of memory"),
        ("canceled", Value::Null, "was canceled"),
        ("aborted", Value::Null, "was aborted"),
    ] {
        let server = MockServer::start().await;
        create(&server).await;
        get(&server, prediction(&server, status, Value::Null, error), None).await;
        assert!(matches!(run(&provider(&server)).await, Ok(Poll::Failed { reason }) if reason.contains(expected)));
    }
}

#[tokio::test]
async fn throttling_waits_as_told_and_server_errors_are_transient() {
    let server = MockServer::start().await;
    let throttled = ResponseTemplate::new(429)
        .set_body_json(json!({"detail": "Request was throttled. Your rate limit resets in ~30s."}));
    Mock::given(method("POST"))
        .respond_with(throttled.clone().insert_header("retry-after", "30"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(throttled).up_to_n_times(1).mount(&server).await;
    create(&server).await;
    get(&server, ResponseTemplate::new(500).set_body_string("internal"), Some(3)).await;
    get(&server, succeeded(&server), None).await;
    delivery(&server, png()).await;
    let provider = provider(&server);
    let request = request();
    let first = provider.submit(&request).await.expect_err("429");
    assert!(
        matches!(&first, ProviderError::RateLimited { retry_after: Some(d), message } if *d == Duration::from_secs(30) && message.contains("throttled")),
        "{first:?}"
    );
    let second = provider.submit(&request).await.expect_err("429");
    assert!(matches!(second, ProviderError::RateLimited { retry_after: None, .. }));
    let submission = provider.submit(&request).await.expect("created");
    for _ in 0..3 {
        assert!(matches!(provider.poll(&request, &submission).await, Err(ProviderError::Transient(_))));
    }
    assert!(matches!(provider.poll(&request, &submission).await, Ok(Poll::Ready(_))));
}

#[tokio::test]
async fn slow_answers_time_out_and_bad_tokens_are_fatal() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(prediction(&server, "starting", Value::Null, Value::Null).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let err = run(&provider(&server)).await.expect_err("timeout");
    assert!(matches!(&err, ProviderError::Transient(m) if m.contains("timed out")), "{err:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token"}),
        ))
        .mount(&server)
        .await;
    let err = run(&provider(&server)).await.expect_err("401");
    assert!(matches!(&err, ProviderError::Fatal(m) if m.contains("401")), "{err:?}");
}

#[tokio::test]
async fn malformed_oversized_and_expired_outputs_are_refused() {
    let cases: Vec<(ResponseTemplate, &str)> = vec![
        (ResponseTemplate::new(200).set_body_bytes(b"not an image".to_vec()), "not a JPEG, PNG or WebP"),
        (ResponseTemplate::new(200).set_body_bytes(vec![0u8; 31 * 1024 * 1024]), "larger than 30 MB"),
        // Files are deleted an hour after the prediction.
        (ResponseTemplate::new(404).set_body_string("Not found"), "expired"),
    ];
    for (answer, expected) in cases {
        let server = MockServer::start().await;
        create(&server).await;
        get(&server, succeeded(&server), None).await;
        delivery(&server, answer).await;
        let err = run(&provider(&server)).await.expect_err(expected);
        assert!(matches!(&err, ProviderError::Fatal(m) if m.contains(expected)), "{expected}: {err:?}");
    }
    let server = MockServer::start().await;
    create(&server).await;
    get(&server, prediction(&server, "succeeded", json!({"weird": true}), Value::Null), None).await;
    assert!(run(&provider(&server)).await.expect_err("no output").to_string().contains("no output"));

    let server = MockServer::start().await;
    create(&server).await;
    get(&server, ResponseTemplate::new(200).set_body_string("<html>"), None).await;
    assert!(matches!(run(&provider(&server)).await, Err(ProviderError::Transient(_))));
}
