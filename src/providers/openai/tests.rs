//! The OpenAI adapter against an in-process wiremock server that answers as the Images API
//! does (`providers-more.md` §1.5–1.9).

use base64::Engine;
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

use super::*;
use crate::providers::{Mode, http::sample_png};

fn request(endpoint: &str) -> GenerationRequest {
    GenerationRequest {
        endpoint: endpoint.into(),
        model: "gpt-image-2".into(),
        model_name: "GPT Image 2".into(),
        prompt: "a poster that says OPEN LATE".into(),
        seed: 7,
        mode: Mode::TwoK,
        aspect_ratio: "3:4".into(),
        width: 1216,
        height: 1632,
        reference_image: None,
    }
}

fn provider(server: &MockServer) -> OpenAiProvider {
    let base = Url::parse(&format!("{}/", server.uri())).expect("url");
    OpenAiProvider::with_timeout(Secret::new("test-key"), base, Duration::from_millis(1500)).expect("client")
}

fn b64_png() -> String {
    base64::engine::general_purpose::STANDARD.encode(sample_png(48, 64))
}

fn success() -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("x-request-id", "req_1").set_body_json(json!({
        "created": 1_780_000_000,
        "data": [{"b64_json": b64_png()}],
        "background": "opaque", "output_format": "png", "quality": "high", "size": "1216x1632",
        "usage": {"input_tokens": 50, "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
                  "output_tokens": 7024, "total_tokens": 7074}
    }))
}

fn error_body(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}
    }))
}

async fn poll(provider: &OpenAiProvider, request: &GenerationRequest) -> Result<Poll, ProviderError> {
    let submission = provider.submit(request).await.expect("submit is local");
    provider.poll(request, &submission).await
}

#[tokio::test]
async fn a_generation_returns_the_decoded_image_and_its_token_cost() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .and(header("authorization", "Bearer test-key"))
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;
    let provider = provider(&server);
    let request = request("gpt-image-2");
    let Poll::Ready(image) = poll(&provider, &request).await.expect("poll") else { panic!("not ready") };
    assert_eq!((image.content_type.as_str(), image.width, image.height), ("image/png", 48, 64));
    // 50 text tokens at $5/M + 7 024 image tokens at $30/M.
    let usd = image.usage_usd.expect("usage");
    assert!((usd - 0.21097).abs() < 1e-9, "{usd}");

    let sent = &server.received_requests().await.expect("requests")[0];
    let body: Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(body["model"], "gpt-image-2");
    assert_eq!(body["size"], "1216x1632", "gpt-image-2 takes custom sizes in multiples of 16");
    assert!(body.get("response_format").is_none(), "GPT image models refuse response_format");
}

#[tokio::test]
async fn the_charge_is_the_reported_usage_below_the_hold() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/images/generations")).respond_with(success()).mount(&server).await;
    let Poll::Ready(image) = poll(&provider(&server), &request("gpt-image-2")).await.expect("poll") else {
        panic!("not ready")
    };
    // The catalog's GPT Image 2 holds 150 credits at 2k (see catalog.toml) with markup 2.5.
    let catalog = crate::catalog::file::parse(crate::catalog::CATALOG_TOML).expect("catalog");
    let model = catalog.model("gpt-image-2").expect("gpt-image-2 in the catalog");
    let hold = model.starting_price().expect("price");
    let charge = crate::jobs::charge_for(hold, model.usage_markup, image.usage_usd);
    assert_eq!(charge, 53, "ceil($0.21097 × 100 × 2.5)");
    assert!(charge < hold, "{charge} < {hold}");
}

#[tokio::test]
async fn a_reference_image_goes_to_edits_as_a_typed_multipart_file() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/images/edits")).respond_with(success()).expect(1).mount(&server).await;
    let mut request = request("gpt-image-2");
    request.reference_image = Some(sample_png(16, 16));
    assert!(matches!(poll(&provider(&server), &request).await, Ok(Poll::Ready(_))));
    let sent = &server.received_requests().await.expect("requests")[0];
    let body = String::from_utf8_lossy(&sent.body);
    assert!(body.contains("name=\"image[]\"; filename=\"reference.png\""), "{body:.400}");
    assert!(body.contains("Content-Type: image/png"), "a real content type, never octet-stream");
    assert!(body.contains("name=\"model\"") && body.contains("gpt-image-2"));
}

#[tokio::test]
async fn moderation_blocked_is_moderation_with_its_stage_and_categories() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "Your request was rejected by the safety system. safety_violations=[sexual]",
            "type": "image_generation_user_error", "param": null, "code": "moderation_blocked",
            "moderation_details": {"moderation_stage": "output", "categories": ["sexual"]}
        }})))
        .mount(&server)
        .await;
    match poll(&provider(&server), &request("gpt-image-2")).await {
        Ok(Poll::Moderated { reason }) => {
            assert_eq!(reason, "OpenAI's safety system flagged the generated image (sexual)")
        }
        other => panic!("expected moderation, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limits_wait_for_retry_after_when_given_and_quota_is_fatal() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(error_body(429, "rate_limit_exceeded", "Rate limit reached").insert_header("retry-after", "7"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(error_body(429, "rate_limit_exceeded", "Rate limit reached"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(error_body(429, "insufficient_quota", "You exceeded your current quota"))
        .mount(&server)
        .await;
    let provider = provider(&server);
    let request = request("gpt-image-2");
    let first = poll(&provider, &request).await.expect_err("429");
    assert!(
        matches!(&first, ProviderError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(7)),
        "{first:?}"
    );
    let second = poll(&provider, &request).await.expect_err("429");
    assert!(matches!(&second, ProviderError::RateLimited { retry_after: None, .. }), "{second:?}");
    let third = poll(&provider, &request).await.expect_err("quota");
    assert!(matches!(&third, ProviderError::Fatal(m) if m.contains("out of quota")), "{third:?}");
}

#[tokio::test]
async fn server_errors_are_transient_until_the_image_comes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(error_body(503, "server_error", "The server is overloaded"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path("/images/generations")).respond_with(success()).mount(&server).await;
    let provider = provider(&server);
    let request = request("gpt-image-2");
    for _ in 0..2 {
        let err = poll(&provider, &request).await.expect_err("503");
        assert!(matches!(&err, ProviderError::Transient(m) if m.contains("503")), "{err:?}");
    }
    assert!(matches!(poll(&provider, &request).await, Ok(Poll::Ready(_))));
}

#[tokio::test]
async fn a_slow_answer_times_out_as_transient_and_bad_keys_are_fatal() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .and(header("authorization", "Bearer test-key"))
        .respond_with(success().set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let err = poll(&provider(&server), &request("gpt-image-2")).await.expect_err("timeout");
    assert!(matches!(&err, ProviderError::Transient(m) if m.contains("timed out")), "{err:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(error_body(401, "invalid_api_key", "Incorrect API key provided"))
        .mount(&server)
        .await;
    let err = poll(&provider(&server), &request("gpt-image-2")).await.expect_err("401");
    assert!(matches!(&err, ProviderError::Fatal(m) if m.contains("401")), "{err:?}");
}

#[tokio::test]
async fn malformed_and_oversized_results_are_refused() {
    let cases: Vec<(ResponseTemplate, &str)> = vec![
        (ResponseTemplate::new(200).set_body_string("<html>gateway</html>"), "unexpected response"),
        (ResponseTemplate::new(200).set_body_json(json!({"data": []})), "no image"),
        (ResponseTemplate::new(200).set_body_json(json!({"data": [{"b64_json": "!!not base64!!"}]})), "base64"),
        (
            ResponseTemplate::new(200).set_body_json(json!({"data": [{"b64_json": "aGVsbG8gd29ybGQ="}]})),
            "not a JPEG, PNG or WebP",
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"data": [{"b64_json": "A".repeat(41 * 1024 * 1024)}]})),
            "larger than 30 MB",
        ),
    ];
    for (answer, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(answer).mount(&server).await;
        let err = poll(&provider(&server), &request("gpt-image-2")).await.expect_err(expected);
        assert!(err.to_string().contains(expected), "{expected}: {err:?}");
    }
}

#[tokio::test]
async fn an_expired_result_url_is_a_fatal_failure() {
    let server = MockServer::start().await;
    let url = format!("{}/files/img.png?sig=secret", server.uri());
    Mock::given(method("POST"))
        .and(path("/images/generations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"url": url}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/files/img.png"))
        .respond_with(ResponseTemplate::new(403).set_body_string("AuthenticationFailed"))
        .mount(&server)
        .await;
    let err = poll(&provider(&server), &request("gpt-image-2")).await.expect_err("expired");
    assert!(matches!(&err, ProviderError::Fatal(m) if m.contains("expired")), "{err:?}");
    assert!(!err.to_string().contains("secret"), "no signature in messages");
}

#[test]
fn sizes_follow_each_model_family() {
    assert_eq!(OpenAiProvider::size("gpt-image-2", 1216, 1632), "1216x1632");
    assert_eq!(OpenAiProvider::size("gpt-image-2.6-sunburst", 4000, 4000), "2880x2880");
    assert_eq!(OpenAiProvider::size("gpt-image-2", 2000, 200), "592x192", "ratio clamped to 3:1");
    assert_eq!(OpenAiProvider::size("gpt-image-1.5", 1920, 1080), "1536x1024");
    assert_eq!(OpenAiProvider::size("gpt-image-1-mini", 1024, 1024), "1024x1024");
}
