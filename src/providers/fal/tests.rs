//! The fal adapter against an in-process wiremock server that answers as fal's queue does
//! (`providers.md` §3.1–3.3): submit, status, result, and the media host.

use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

use super::*;
use crate::providers::{Mode, http::sample_png};

const ENDPOINT: &str = "fal-ai/ideogram/v3";
const STATUS: &str = "/fal-ai/ideogram/requests/req-1/status";
const RESULT: &str = "/fal-ai/ideogram/requests/req-1";

fn request() -> GenerationRequest {
    GenerationRequest {
        endpoint: ENDPOINT.into(),
        model: "ideogram-3".into(),
        model_name: "Ideogram 3.0".into(),
        prompt: "a jazz festival poster titled BLUE NOTES".into(),
        seed: 11,
        mode: Mode::TwoK,
        aspect_ratio: "3:4".into(),
        width: 1216,
        height: 1632,
        reference_image: None,
    }
}

fn provider(server: &MockServer) -> FalProvider {
    let base = Url::parse(&format!("{}/", server.uri())).expect("url");
    FalProvider::with_timeout(Secret::new("test-key"), base.clone(), base, Duration::from_millis(1500)).expect("client")
}

async fn accept(server: &MockServer) {
    let uri = server.uri();
    Mock::given(method("POST"))
        .and(path(format!("/{ENDPOINT}")))
        .and(header("authorization", "Key test-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "request_id": "req-1",
            "response_url": format!("{uri}{RESULT}"),
            "status_url": format!("{uri}{STATUS}"),
            "cancel_url": format!("{uri}{RESULT}/cancel"),
            "queue_position": 0
        })))
        .mount(server)
        .await;
}

async fn status(server: &MockServer, answer: ResponseTemplate, times: Option<u64>) {
    let mock = Mock::given(method("GET")).and(path(STATUS)).respond_with(answer);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

fn state(s: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"status": s}))
}

async fn result(server: &MockServer, nsfw: bool) {
    let uri = server.uri();
    Mock::given(method("GET"))
        .and(path(RESULT))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "images": [{"url": format!("{uri}/files/out.png"), "width": 48, "height": 64, "content_type": "image/png"}],
            "seed": 11, "has_nsfw_concepts": [nsfw]
        })))
        .mount(server)
        .await;
}

async fn media(server: &MockServer, answer: ResponseTemplate) {
    Mock::given(method("GET")).and(path("/files/out.png")).respond_with(answer).mount(server).await;
}

fn png() -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("content-type", "image/png").set_body_bytes(sample_png(48, 64).to_vec())
}

/// Submits, then polls until something other than pending (at most 5 polls).
async fn run(provider: &FalProvider) -> Result<Poll, ProviderError> {
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
async fn a_queued_request_completes_and_the_image_is_downloaded() {
    let server = MockServer::start().await;
    accept(&server).await;
    status(&server, state("IN_QUEUE"), Some(1)).await;
    status(&server, state("IN_PROGRESS"), Some(1)).await;
    status(&server, state("COMPLETED"), None).await;
    result(&server, false).await;
    media(&server, png()).await;
    let provider = provider(&server);
    let request = request();
    let submission = provider.submit(&request).await.expect("submit");
    assert_eq!(submission.task_id, "req-1");
    assert_eq!(submission.polling_url.as_deref(), Some(format!("{}{STATUS}", server.uri()).as_str()));
    assert!(matches!(provider.poll(&request, &submission).await, Ok(Poll::Pending { .. })));
    assert!(matches!(provider.poll(&request, &submission).await, Ok(Poll::Pending { .. })));
    let Ok(Poll::Ready(image)) = provider.poll(&request, &submission).await else { panic!("not ready") };
    assert_eq!((image.width, image.height, image.usage_usd), (48, 64, None));

    let sent = &server.received_requests().await.expect("requests")[0];
    let body: Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(body["prompt"], "a jazz festival poster titled BLUE NOTES");
    assert_eq!(body["image_size"], json!({"width": 1216, "height": 1632}));
    assert_eq!(body["enable_safety_checker"], true);
    assert!(body.get("input").is_none(), "fal takes the input without a wrapper");
}

#[tokio::test]
async fn the_safety_checker_is_moderation_both_ways() {
    // A flagged (black) image.
    let server = MockServer::start().await;
    accept(&server).await;
    status(&server, state("COMPLETED"), None).await;
    result(&server, true).await;
    media(&server, png()).await;
    assert!(matches!(run(&provider(&server)).await, Ok(Poll::Moderated { reason }) if reason.contains("flagged")));

    // A refused prompt at submission.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"detail": [{"loc": ["body", "prompt"],
            "msg": "The content could not be processed because it contained material flagged by a content checker.",
            "type": "content_policy_violation"}]})))
        .mount(&server)
        .await;
    let err = run(&provider(&server)).await.expect_err("moderated");
    assert!(matches!(&err, ProviderError::Moderated(m) if m.contains("content checker")), "{err:?}");
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "4")
                .set_body_json(json!({"detail": "Too many requests"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"detail": "Too many requests"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    accept(&server).await;
    status(&server, ResponseTemplate::new(502).set_body_string("bad gateway"), Some(2)).await;
    status(&server, state("COMPLETED"), None).await;
    result(&server, false).await;
    media(&server, png()).await;
    let provider = provider(&server);
    let request = request();
    let first = provider.submit(&request).await.expect_err("429");
    assert!(matches!(first, ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(4)));
    let second = provider.submit(&request).await.expect_err("429");
    assert!(matches!(second, ProviderError::RateLimited { retry_after: None, .. }));
    let submission = provider.submit(&request).await.expect("accepted");
    for _ in 0..2 {
        let err = provider.poll(&request, &submission).await.expect_err("502");
        assert!(matches!(&err, ProviderError::Transient(m) if m.contains("502")), "{err:?}");
    }
    assert!(matches!(provider.poll(&request, &submission).await, Ok(Poll::Ready(_))));
}

#[tokio::test]
async fn slow_polls_time_out_as_transient_and_bad_keys_are_fatal() {
    let server = MockServer::start().await;
    accept(&server).await;
    status(&server, state("IN_QUEUE").set_delay(Duration::from_secs(5)), None).await;
    let err = run(&provider(&server)).await.expect_err("timeout");
    assert!(matches!(&err, ProviderError::Transient(m) if m.contains("timed out")), "{err:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"detail": "Invalid key"})))
        .mount(&server)
        .await;
    let err = run(&provider(&server)).await.expect_err("401");
    assert!(matches!(&err, ProviderError::Fatal(m) if m.contains("401")), "{err:?}");
}

#[tokio::test]
async fn malformed_oversized_and_expired_results_are_refused() {
    let cases: Vec<(ResponseTemplate, &str)> = vec![
        (ResponseTemplate::new(200).set_body_bytes(b"GIF89a not an image".to_vec()), "not a JPEG, PNG or WebP"),
        (ResponseTemplate::new(200).set_body_bytes(vec![0u8; 31 * 1024 * 1024]), "larger than 30 MB"),
        (ResponseTemplate::new(404).set_body_string("NoSuchKey"), "expired"),
    ];
    for (answer, expected) in cases {
        let server = MockServer::start().await;
        accept(&server).await;
        status(&server, state("COMPLETED"), None).await;
        result(&server, false).await;
        media(&server, answer).await;
        let err = run(&provider(&server)).await.expect_err(expected);
        assert!(matches!(&err, ProviderError::Fatal(m) if m.contains(expected)), "{expected}: {err:?}");
    }

    // A result without images, and a status that is not JSON.
    let server = MockServer::start().await;
    accept(&server).await;
    status(&server, state("COMPLETED"), None).await;
    Mock::given(method("GET"))
        .and(path(RESULT))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"seed": 1})))
        .mount(&server)
        .await;
    let err = run(&provider(&server)).await.expect_err("no image");
    assert!(err.to_string().contains("no image"), "{err:?}");

    let server = MockServer::start().await;
    accept(&server).await;
    status(&server, ResponseTemplate::new(200).set_body_string("<html>"), None).await;
    let err = run(&provider(&server)).await.expect_err("not json");
    assert!(matches!(&err, ProviderError::Transient(m) if m.contains("unexpected status")), "{err:?}");
}

#[tokio::test]
async fn queue_urls_on_foreign_hosts_are_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "request_id": "req-1", "status_url": "https://evil.example/requests/req-1/status"})))
        .mount(&server)
        .await;
    let err = run(&provider(&server)).await.expect_err("foreign");
    assert!(matches!(&err, ProviderError::Fatal(m) if m.contains("refusing")), "{err:?}");
}

#[test]
fn ratio_sized_endpoints_get_an_aspect_ratio_the_others_pixels() {
    let mut r = request();
    let body = FalProvider::body(&r);
    assert_eq!((body.get("aspect_ratio"), &body["image_size"]), (None, &json!({"width": 1216, "height": 1632})));
    r.endpoint = "fal-ai/luma-photon".into();
    let body = FalProvider::body(&r);
    assert_eq!((&body["aspect_ratio"], body.get("image_size")), (&json!("3:4"), None));
    r.endpoint = "fal-ai/nano-banana-pro".into();
    r.mode = Mode::FourK;
    assert_eq!(FalProvider::body(&r)["resolution"], "4K");
    r.reference_image = Some(sample_png(4, 4));
    let body = FalProvider::body(&r);
    assert!(body["image_urls"][0].as_str().is_some_and(|u| u.starts_with("data:image/png;base64,")));
}
