//! The Gemini adapter against an in-process wiremock server that answers as
//! `generateContent` does (`providers-more.md` §2.4–2.8). Gemini returns images inline, so
//! there is no result URL that could expire.

use base64::Engine;
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

use super::*;
use crate::providers::http::sample_png;

const PATH: &str = "/v1beta/models/gemini-3.1-flash-image:generateContent";

fn request() -> GenerationRequest {
    GenerationRequest {
        endpoint: "gemini-3.1-flash-image".into(),
        model: "nano-banana-2".into(),
        model_name: "Nano Banana 2".into(),
        prompt: "a bakery window sign that says FRESH BREAD".into(),
        seed: 7,
        mode: Mode::TwoK,
        aspect_ratio: "16:9".into(),
        width: 1888,
        height: 1056,
        reference_image: None,
    }
}

fn provider(server: &MockServer) -> GoogleProvider {
    let base = Url::parse(&format!("{}/", server.uri())).expect("url");
    GoogleProvider::with_timeout(Secret::new("test-key"), base, Duration::from_millis(1500)).expect("client")
}

fn png_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(sample_png(64, 36))
}

fn success() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Here is your sign."},
                {"inlineData": {"mimeType": "image/png", "data": png_b64()}, "thought": true},
                {"inlineData": {"mimeType": "image/png", "data": png_b64()}, "thoughtSignature": "c2ln"}
            ]},
            "finishReason": "STOP", "index": 0
        }],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1700,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1680}, {"modality": "TEXT", "tokenCount": 20}]},
        "modelVersion": "gemini-3.1-flash-image", "responseId": "r1"
    }))
}

async fn poll(provider: &GoogleProvider) -> Result<Poll, ProviderError> {
    let request = request();
    let submission = provider.submit(&request).await.expect("local");
    provider.poll(&request, &submission).await
}

#[tokio::test]
async fn a_generation_returns_the_last_non_thought_image_and_its_token_cost() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("x-goog-api-key", "test-key"))
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;
    let Poll::Ready(image) = poll(&provider(&server)).await.expect("poll") else { panic!("not ready") };
    assert_eq!((image.width, image.height), (64, 36));
    // 1 680 image tokens at $60/M + 12 prompt tokens at $0.50/M.
    let usd = image.usage_usd.expect("usage");
    assert!((usd - 0.100806).abs() < 1e-9, "{usd}");
    // Far below the catalog's hold: the charge is the usage, capped by the hold.
    let catalog = crate::catalog::file::parse(crate::catalog::CATALOG_TOML).expect("catalog");
    let model = catalog.model("nano-banana-2").expect("nano-banana-2 in the catalog");
    let hold = model.starting_price().expect("price");
    let charge = crate::jobs::charge_for(hold, model.usage_markup, image.usage_usd);
    assert!(charge < hold, "{charge} < {hold}");

    let sent = &server.received_requests().await.expect("requests")[0];
    let body: Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(body["generationConfig"]["imageConfig"], json!({"aspectRatio": "16:9", "imageSize": "2K"}));
    assert_eq!(body["generationConfig"]["responseModalities"], json!(["TEXT", "IMAGE"]));
    assert_eq!(body["contents"][0]["parts"][0]["text"], "a bakery window sign that says FRESH BREAD");
}

#[tokio::test]
async fn safety_outcomes_arrive_as_http_200_and_are_told_apart() {
    let cases = [
        (
            json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "safetyRatings": []}}),
            "moderated: Google's safety filter blocked the prompt (PROHIBITED_CONTENT)",
        ),
        (
            json!({"candidates": [{"content": {"role": "model"}, "finishReason": "IMAGE_SAFETY",
            "finishMessage": "Unable to show the generated image: it may violate Google's Responsible AI practices."}]}),
            "moderated: Google's safety filter blocked the image (IMAGE_SAFETY): Unable to show the generated image: it may violate Google's Responsible AI practices.",
        ),
        (
            json!({"candidates": [{"content": {"role": "model"}, "finishReason": "NO_IMAGE"}]}),
            "failed: the model returned no image (NO_IMAGE)",
        ),
        (
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "I can't draw that."}]}, "finishReason": "STOP"}]}),
            "failed: the model answered with text only, without an image",
        ),
    ];
    for (answer, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
        let got = match poll(&provider(&server)).await {
            Ok(Poll::Moderated { reason }) => format!("moderated: {reason}"),
            Ok(Poll::Failed { reason }) => format!("failed: {reason}"),
            other => format!("{other:?}"),
        };
        assert_eq!(got, expected);
    }
}

#[tokio::test]
async fn resource_exhausted_waits_as_told_and_server_errors_are_transient() {
    let server = MockServer::start().await;
    let exhausted = |message: &str| {
        ResponseTemplate::new(429).set_body_json(json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": message, "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"}]}}))
    };
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(exhausted("Quota exceeded").insert_header("retry-after", "3"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(exhausted("Quota exceeded. Please retry in 28.0s."))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(exhausted("Quota exceeded"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_json(json!({"error": {"code": 503, "status": "UNAVAILABLE", "message": "overloaded"}})),
        )
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path(PATH)).respond_with(success()).mount(&server).await;
    let provider = provider(&server);
    let mut got = Vec::new();
    for _ in 0..3 {
        match poll(&provider).await {
            Err(ProviderError::RateLimited { retry_after, .. }) => got.push(retry_after),
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }
    assert_eq!(got, [Some(Duration::from_secs(3)), Some(Duration::from_secs(28)), None]);
    for _ in 0..2 {
        let err = poll(&provider).await.expect_err("503");
        assert!(matches!(&err, ProviderError::Transient(m) if m.contains("UNAVAILABLE")), "{err:?}");
    }
    assert!(matches!(poll(&provider).await, Ok(Poll::Ready(_))));
}

#[tokio::test]
async fn bad_keys_and_retired_models_are_fatal_and_slow_answers_time_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
        "code": 400, "status": "INVALID_ARGUMENT", "message": "API key not valid. Please pass a valid API key.",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}})))
        .mount(&server)
        .await;
    let err = poll(&provider(&server)).await.expect_err("bad key");
    assert!(matches!(&err, ProviderError::Fatal(m) if m.contains("API key is not valid")), "{err:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
        "code": 404, "status": "NOT_FOUND", "message": "models/imagen-4.0-generate-001 is not found"}})))
        .mount(&server)
        .await;
    let err = poll(&provider(&server)).await.expect_err("404");
    assert!(matches!(&err, ProviderError::Fatal(m) if m.contains("NOT_FOUND")), "{err:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(success().set_delay(Duration::from_secs(5))).mount(&server).await;
    let err = poll(&provider(&server)).await.expect_err("timeout");
    assert!(matches!(&err, ProviderError::Transient(m) if m.contains("timed out")), "{err:?}");
}

#[tokio::test]
async fn malformed_and_oversized_results_are_refused() {
    let image_part = |data: String| json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": data}}]}, "finishReason": "STOP"}]});
    let cases: Vec<(ResponseTemplate, &str)> = vec![
        (ResponseTemplate::new(200).set_body_string("{not json"), "unexpected response"),
        (ResponseTemplate::new(200).set_body_json(json!({})), "no candidates"),
        (ResponseTemplate::new(200).set_body_json(image_part("%%%".into())), "base64"),
        (ResponseTemplate::new(200).set_body_json(image_part("A".repeat(41 * 1024 * 1024))), "larger than 30 MB"),
    ];
    for (answer, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(answer).mount(&server).await;
        let err = poll(&provider(&server)).await.expect_err(expected);
        assert!(err.to_string().contains(expected), "{expected}: {err:?}");
    }
}

#[test]
fn a_reference_image_is_an_inline_part() {
    let mut request = request();
    request.reference_image = Some(sample_png(8, 8));
    request.mode = Mode::FourK;
    let body = GoogleProvider::body(&request);
    assert_eq!(body["contents"][0]["parts"][1]["inlineData"]["mimeType"], "image/png");
    assert!(body["contents"][0]["parts"][1]["inlineData"]["data"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(body["generationConfig"]["imageConfig"]["imageSize"], "4K");
}
