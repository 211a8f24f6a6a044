//! Every route's inputs, filled with what a careless client or an attacker sends: NUL, bytes
//! that are not UTF-8, control characters, invisible and bidi characters, over-long text,
//! numbers that overflow, nothing at all. Through every path parameter, every query parameter
//! the app reads, every form field (signed in as an administrator, with a valid CSRF token, so
//! the handlers really run), multipart fields, and JSON bodies with a valid API key. None may
//! answer 5xx (500 means a bug).

use faceoff::accounts::{self, Role, api_keys, rate_limit::ThrottleSettings};
use reqwest::{Method, StatusCode, multipart};

use crate::helpers::{Browser, TestApp, TestUser};

/// Every form field and query parameter name the application reads.
const NAMES: &[&str] = &[
    "email",
    "password",
    "next",
    "notice",
    "name",
    "action",
    "api_key_id",
    "amount",
    "reason",
    "idempotency_key",
    "pack",
    "current_password",
    "new_password",
    "revoke_keys",
    "prompt",
    "models",
    "model",
    "mode",
    "aspect_ratio",
    "seed",
    "page",
    "session_id",
    "canceled",
    "url",
    "description",
    "event_run_completed",
    "event_job_failed",
    "event_credits_low",
    "credits_low_threshold",
    "endpoint_id",
    "delivery_id",
    "limit",
    "cursor",
];

/// Bad values, percent-encoded as they travel in a URL or a form.
fn bad_values() -> Vec<(&'static str, String)> {
    vec![
        ("NUL", "a%00b".into()),
        ("invalid UTF-8", "%FF%FE%FD".into()),
        ("control characters", "%1B%5B31m%0D%0A%07%08".into()),
        ("bidi and invisible characters", "%E2%80%AEx%E2%80%8B%EF%BB%BF".into()),
        ("over-long text", "x".repeat(20_000)),
        ("an overflowing negative number", "-9223372036854775808".into()),
        ("an overflowing number", "999999999999999999999999999".into()),
        ("nothing", String::new()),
        ("a path", "..%2F..%2Fetc%2Fpasswd".into()),
    ]
}

/// The same bad values as JSON strings (a NUL as `\u0000`; JSON cannot carry broken UTF-8 in a
/// string: that case is a raw body below).
fn bad_json_strings() -> Vec<String> {
    vec![
        "a\u{0}b".into(),
        "\u{1b}[31m\r\n\u{7}".into(),
        "\u{202e}x\u{200b}\u{feff}".into(),
        "x".repeat(20_000),
        "-9223372036854775808".into(),
        String::new(),
    ]
}

fn concrete(path: &str, value: Option<&str>) -> String {
    let param = |good: &str| value.map(str::to_string).unwrap_or_else(|| good.to_string());
    path.replace("{slug}", &param("flux-2"))
        .replace("{pair}", &param("flux-2-vs-flux-ultra-1-1"))
        .replace("{use_case}", &param("portrait"))
        .replace("{id}", &param("0196f7a0-0000-7000-8000-000000000001"))
        .replace("{payment_id}", &param("0196f7a0-0000-7000-8000-000000000002"))
        .replace("{job_id}", &param("0196f7a0-0000-7000-8000-000000000003"))
        .replace("{delivery_id}", &param("0196f7a0-0000-7000-8000-000000000004"))
        .replace("{*key}", &param("runs/x/y.jpg"))
        .replace("{share_id}", &param("AAAAAAAAAAAAAAAAAAAAAA"))
        .replace("{n}", &param("1"))
        .replace("{report_id}", &param("1"))
}

struct Walk {
    requests: usize,
    failures: Vec<String>,
}

impl Walk {
    fn check(&mut self, what: String, status: StatusCode) {
        self.requests += 1;
        if status.is_server_error() {
            self.failures.push(format!("{what}: {status}"));
        }
    }
}

async fn admin(app: &TestApp) -> (Browser, TestUser) {
    let user = app.create_user("root@example.com", 1_000_000).await;
    accounts::set_role(&app.pool, &user.email, Role::Admin).await.expect("promote");
    let browser = app.browser();
    browser.sign_in(&user).await;
    (browser, user)
}

#[tokio::test]
async fn no_input_on_any_route_gets_a_5xx() {
    let app = TestApp::spawn_with(|c| {
        c.throttle = ThrottleSettings {
            attempts_per_minute: 1_000_000,
            free_failures: 1_000_000,
            free_failures_per_address: 1_000_000,
            ..ThrottleSettings::default()
        }
    })
    .await;
    let (admin, user) = admin(&app).await;
    let key = api_keys::create(&app.pool, user.id, "bad input").await.expect("key");
    let paths = faceoff::app::routes().paths().to_vec();
    let mut walk = Walk { requests: 0, failures: Vec::new() };
    let (mut routes, mut inputs) = (0, 0);

    for path in &paths {
        let good = concrete(path, None);
        let mut methods = Vec::new();
        for method in [Method::GET, Method::POST, Method::PATCH, Method::DELETE] {
            let response = admin.client.request(method.clone(), admin.url(&good)).send().await.expect("probe");
            if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                methods.push(method);
            }
        }
        routes += methods.len();
        for (kind, value) in bad_values() {
            // An address is at most 64 KiB (the HTTP libraries on both ends refuse longer ones):
            // over-long text is 2,000 characters there, 20,000 in bodies.
            let in_url: String = value.chars().take(2_000).collect();
            // Path parameters.
            if path.contains('{') {
                inputs += 1;
                let url = concrete(path, Some(&in_url));
                for method in &methods {
                    let status =
                        admin.client.request(method.clone(), admin.url(&url)).send().await.expect("send").status();
                    walk.check(format!("{method} {path} with {kind} in the path"), status);
                }
            }
            // Query parameters.
            if methods.contains(&Method::GET) {
                inputs += 1;
                // Every name at once stays under the 64 KiB an address may have.
                let each: String = in_url.chars().take(60_000 / NAMES.len()).collect();
                let query: Vec<String> = NAMES.iter().map(|n| format!("{n}={each}")).collect();
                let url = format!("{good}?{}", query.join("&"));
                let status = admin.get(&url).await.status();
                walk.check(format!("GET {path} with {kind} in the query"), status);
            }
            if path.starts_with("/api/") {
                for method in methods.iter().filter(|m| **m == Method::POST || **m == Method::PATCH) {
                    inputs += 1;
                    let status = reqwest::Client::new()
                        .request(method.clone(), admin.url(&good))
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(format!("{{\"prompt\": \"{value}\", \"url\": \"{value}\", \"events\": [\"{value}\"]}}"))
                        .send()
                        .await
                        .expect("send")
                        .status();
                    walk.check(format!("{method} {path} with {kind} in a JSON body"), status);
                }
                continue;
            }
            if !methods.contains(&Method::POST) {
                continue;
            }
            inputs += 1;
            // A form with every field bad and a valid token (the handler runs).
            let token = admin.token("/account", None).await;
            let mut body: Vec<String> = NAMES.iter().map(|n| format!("{n}={value}")).collect();
            body.push(format!("csrf_token={token}"));
            let response = admin
                .client
                .post(admin.url(&good))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.join("&"))
                .send()
                .await
                .expect("send");
            let status = response.status();
            walk.check(format!("POST {path} with {kind} in every form field"), status);
            if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                // The studio's multipart form.
                let raw = percent_encoding::percent_decode_str(&value).collect::<Vec<u8>>();
                let mut form = multipart::Form::new().text("csrf_token", admin.token("/account", None).await);
                for name in NAMES {
                    form = form.part(*name, multipart::Part::bytes(raw.clone()));
                }
                form = form.part("reference_image", multipart::Part::bytes(raw.clone()).file_name("x.png"));
                let status = admin.post_multipart(&good, form).await.status();
                walk.check(format!("POST {path} with {kind} in every multipart field"), status);
            }
            // Some forms end the session (log-out, sign out everywhere): sign in again.
            if !admin.is_signed_in().await {
                admin.sign_in(&user).await;
            }
        }
        // JSON bodies that are not what the API expects.
        let body_methods: Vec<Method> =
            methods.iter().filter(|m| **m == Method::POST || **m == Method::PATCH).cloned().collect();
        if path.starts_with("/api/") && !body_methods.is_empty() {
            let mut bodies: Vec<Vec<u8>> = vec![
                b"{\"prompt\": \"\xff\xfe\"}".to_vec(),
                b"not json at all".to_vec(),
                b"[]".to_vec(),
                b"{\"models\": 5, \"prompt\": {}}".to_vec(),
                b"{\"seed\": -1, \"prompt\": \"x\", \"models\": [\"flux-2\", \"flux-ultra-1-1\"]}".to_vec(),
                b"{\"seed\": 1e400}".to_vec(),
            ];
            for text in bad_json_strings() {
                let body = serde_json::json!({
                    "prompt": text, "models": [text, text], "mode": text, "aspect_ratio": text,
                    "reference_image": text, "url": text, "events": [text], "description": text,
                    "credits_low_threshold": text, "overlap_seconds": text, text.clone(): text,
                });
                bodies.push(body.to_string().into_bytes());
            }
            bodies.push(b"{\"url\": \"https://10.0.0.1/x\", \"events\": [\"run.completed\"], \"credits_low_threshold\": -9223372036854775808, \"overlap_seconds\": 9223372036854775807}".to_vec());
            for (method, body) in body_methods.iter().flat_map(|m| bodies.iter().map(move |b| (m.clone(), b.clone()))) {
                inputs += 1;
                let status = reqwest::Client::new()
                    .request(method.clone(), admin.url(&good))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("bad-{}", walk.requests))
                    .body(body.clone())
                    .send()
                    .await
                    .expect("send")
                    .status();
                walk.check(format!("{method} {path} with the JSON body {:?}", String::from_utf8_lossy(&body)), status);
            }
        }
    }
    // Headers the app reads.
    let long_key = format!("Bearer fo_{}", "a".repeat(5_000));
    let values: [&[u8]; 4] = [b"Bearer fo_\xff\xfe", b"Bearer fo_\tx", b"Bearer", long_key.as_bytes()];
    for value in values {
        let header = reqwest::header::HeaderValue::from_bytes(value).expect("a header value");
        let status = reqwest::Client::new()
            .get(admin.url("/api/v1/me"))
            .header("authorization", header)
            .send()
            .await
            .expect("send")
            .status();
        walk.check(format!("GET /api/v1/me with the key {:?}", String::from_utf8_lossy(value)), status);
    }
    let status = reqwest::Client::new()
        .post(admin.url("/api/v1/runs"))
        .bearer_auth(&key)
        .header("idempotency-key", "x".repeat(5000))
        .json(&serde_json::json!({"prompt": "x", "models": ["flux-2", "flux-ultra-1-1"]}))
        .send()
        .await
        .expect("send")
        .status();
    walk.check("POST /api/v1/runs with an over-long Idempotency-Key".into(), status);

    println!(
        "bad input: {} paths, {routes} routes (path x method), {inputs} inputs, {} requests, {} answered 5xx",
        paths.len(),
        walk.requests,
        walk.failures.len()
    );
    assert!(walk.failures.is_empty(), "5xx answers:\n{}", walk.failures.join("\n"));
    assert!(walk.requests > 500, "{} requests", walk.requests);
    app.assert_invariants().await;
}
