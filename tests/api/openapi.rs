//! The OpenAPI document (issue 17): it is a valid OpenAPI 3.1 document (checked against the
//! OpenAPI Initiative's own schema, a copy in `openapi-3.1/`), it describes every API route the
//! router serves and every method it answers, and the API answers as it documents — a contract
//! test that generates valid and invalid requests from the document for every operation and
//! checks each answer's status and body against the documented responses (and that none is a
//! 5xx).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::TestApp;

fn schema_file(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/openapi-3.1").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read the schema")).expect("schema JSON")
}

/// Validates `instance` against `schema` (JSON Schema 2020-12 with the OpenAPI 3.1 schemas
/// registered); returns the errors.
pub fn errors(schema: &Value, instance: &Value) -> Vec<String> {
    let registry = jsonschema::Registry::new()
        .add("https://spec.openapis.org/oas/3.1/schema/2022-10-07", schema_file("schema.json"))
        .and_then(|r| r.add("https://spec.openapis.org/oas/3.1/dialect/base", schema_file("dialect-base.schema.json")))
        .and_then(|r| r.add("https://spec.openapis.org/oas/3.1/meta/base", schema_file("meta-base.schema.json")))
        .and_then(|r| r.prepare())
        .expect("registry");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_registry(&registry)
        .build(schema)
        .unwrap_or_else(|err| panic!("the schema does not compile: {err}"));
    validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let doc = faceoff::app::docs::document();
    assert_eq!(doc["openapi"], "3.1.0");
    // The plain schema, then the one that also checks every Schema Object against the OpenAPI
    // dialect of JSON Schema 2020-12.
    for name in ["schema.json", "schema-base.json"] {
        let found = errors(&schema_file(name), doc);
        assert!(found.is_empty(), "{name}: the document is not valid OpenAPI 3.1:\n{}", found.join("\n"));
    }
    // The validator does catch mistakes.
    let mut broken = doc.clone();
    broken["paths"]["/api/v1/me"]["get"]["responses"] = json!({"200": {"content": {}}});
    broken["info"] = json!({"title": 5});
    assert!(errors(&schema_file("schema-base.json"), &broken).len() >= 2);
    // Every $ref points at something.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1).filter_map(|rest| rest.split('"').next()) {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "{reference} points at nothing");
    }
}

/// Methods a path answers (anything but 405), probed over HTTP.
async fn methods_served(app: &TestApp, path: &str) -> BTreeSet<String> {
    let url = app.url(&concrete(path, &BTreeMap::new()));
    let mut served = BTreeSet::new();
    for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let response = reqwest::Client::new().request(method.clone(), &url).send().await.expect("probe");
        if response.status() != StatusCode::METHOD_NOT_ALLOWED {
            served.insert(method.as_str().to_lowercase());
        }
    }
    served
}

#[tokio::test]
async fn every_api_route_is_described() {
    let app = TestApp::spawn().await;
    let doc = faceoff::app::docs::document();
    let described = doc["paths"].as_object().expect("paths");
    let routes = faceoff::app::routes();
    let api_paths: Vec<&str> = routes.paths().iter().copied().filter(|p| p.starts_with("/api/v1")).collect();
    assert!(api_paths.len() >= 12, "{api_paths:?}");
    let mut missing = Vec::new();
    for path in &api_paths {
        let Some(item) = described.get(*path) else {
            missing.push(format!("{path} is not in the document"));
            continue;
        };
        let documented: BTreeSet<String> = item.as_object().expect("item").keys().cloned().collect();
        for method in methods_served(&app, path).await {
            if !documented.contains(&method) {
                missing.push(format!("{} {path} is served but not described", method.to_uppercase()));
            }
        }
        for method in &documented {
            assert!(
                methods_served(&app, path).await.contains(method),
                "{} {path} is described but not served",
                method.to_uppercase()
            );
        }
    }
    // And nothing is described that the router does not serve.
    for path in described.keys() {
        assert!(api_paths.contains(&path.as_str()), "{path} is described but not routed");
    }
    assert!(missing.is_empty(), "undescribed API routes:\n{}", missing.join("\n"));

    // The document is served as it is built, and the reference page renders it.
    let served: Value = app.get("/api/v1/openapi.json").await.json().await.expect("json");
    assert_eq!(&served, doc);
    let (status, page) = app.page("/docs/api").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("/docs/api");
    let operations: usize =
        doc["paths"].as_object().expect("paths").values().map(|i| i.as_object().map_or(0, |o| o.len())).sum();
    assert_eq!(page.count("[data-testid=api-operation]"), operations, "one section per operation");
    // Nothing from elsewhere and no script of its own (the site's enhancement script is the
    // layout's; the page needs none of it).
    assert_eq!(page.count("script:not([src])"), 0, "no inline script");
    assert!(
        page.attrs("script", "src").iter().chain(page.attrs("link", "href").iter()).all(|u| u.starts_with('/')),
        "no CDN"
    );
    for event in ["run.completed", "job.failed", "credits.low"] {
        assert!(page.source.contains(event), "the page describes {event}");
    }
    assert!(page.source.contains("curl -s -X POST"), "curl examples");
}

// ---- the contract test ----

/// A concrete path for a documented one, with `ids` for its parameters (a syntactically valid
/// unknown id otherwise).
fn concrete(path: &str, ids: &BTreeMap<&str, String>) -> String {
    let mut out = path.to_string();
    for name in ["id", "job_id", "delivery_id", "use_case"] {
        let value = ids.get(name).cloned().unwrap_or_else(|| "0196f7a0-0000-7000-8000-00000000000f".into());
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    out
}

/// `value` if it is a `$ref` to a component, resolved.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => doc.pointer(reference.trim_start_matches('#')).unwrap_or(value),
        None => value,
    }
}

/// The schema of `value` as a standalone JSON Schema (its `$ref`s resolve into the document's
/// components).
pub fn standalone(doc: &Value, schema: &Value) -> Value {
    let mut schema = match schema {
        Value::Object(_) => schema.clone(),
        other => json!({"allOf": [other]}),
    };
    schema["components"] = doc["components"].clone();
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    schema
}

struct Call {
    what: String,
    method: Method,
    path: String,
    key: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

struct Contract<'a> {
    app: &'a TestApp,
    doc: &'a Value,
    checked: usize,
    statuses: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Contract<'_> {
    /// Sends `call` for the operation `op` and checks the answer against its documentation.
    async fn check(&mut self, op: &Value, call: Call, expect: Option<&[u16]>) -> Option<Value> {
        let mut request = reqwest::Client::new().request(call.method.clone(), self.app.url(&call.path));
        if let Some(key) = &call.key {
            request = request.bearer_auth(key);
        }
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        if let Some((content_type, bytes)) = &call.body {
            request = request.header("content-type", content_type).body(bytes.clone());
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        self.checked += 1;
        *self.statuses.entry(format!("{status}")).or_default() += 1;
        let what = format!("{} {} ({}) → {status}", call.method, call.path, call.what);
        if status >= 500 {
            self.failures.push(format!("{what}: a 5xx: {}", String::from_utf8_lossy(&bytes)));
            return None;
        }
        if let Some(expected) = expect
            && !expected.contains(&status)
        {
            self.failures.push(format!("{what}: expected {expected:?}: {}", String::from_utf8_lossy(&bytes)));
        }
        for header in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            if !headers.contains_key(header) {
                self.failures.push(format!("{what}: no {header} header"));
            }
        }
        let documented = op["responses"]
            .get(status.to_string())
            .or_else(|| op["responses"].get(format!("{}XX", status / 100)))
            .or_else(|| op["responses"].get("default"));
        let Some(documented) = documented.map(|r| resolve(self.doc, r)) else {
            self.failures.push(format!("{what}: status {status} is not documented"));
            return None;
        };
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let media = documented["content"].as_object().and_then(|content| {
            content.iter().find(|(ct, _)| content_type.starts_with(ct.as_str())).map(|(_, media)| media)
        });
        match (documented["content"].as_object().filter(|c| !c.is_empty()), media) {
            (None, _) => None,
            (Some(_), None) => {
                self.failures.push(format!("{what}: content type {content_type:?} is not documented"));
                None
            }
            (Some(_), Some(media)) if content_type.starts_with("application/json") => {
                let body: Value = match serde_json::from_slice(&bytes) {
                    Ok(body) => body,
                    Err(err) => {
                        self.failures.push(format!("{what}: not JSON: {err}"));
                        return None;
                    }
                };
                if let Some(schema) = media.get("schema") {
                    let found = errors(&standalone(self.doc, schema), &body);
                    if !found.is_empty() {
                        self.failures
                            .push(format!("{what}: the body does not match its schema: {}\n{body}", found.join("; ")));
                    }
                }
                Some(body)
            }
            (Some(_), Some(_)) => None,
        }
    }
}

/// A value of the wrong type for `schema`.
fn wrong_value(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.contains(&"string") { json!({"not": "a string"}) } else { json!("not a number, list or object") }
}

#[tokio::test]
async fn every_operation_answers_as_documented() {
    // Webhook URLs in the document's examples are public names: with private targets allowed
    // they are accepted without resolving them (no traffic leaves this machine).
    let app = TestApp::spawn_with(|c| {
        c.webhooks.allow_private = true;
        c.signup_credits = 1_000_000;
    })
    .await;
    let doc = faceoff::app::docs::document();
    let user = app.create_user("contract@example.com", 1_000_000).await;
    let key = faceoff::accounts::api_keys::create(&app.pool, user.id, "contract").await.expect("key");

    // Fixtures, so that the valid requests reach real things: an endpoint that gets a delivery,
    // a run whose jobs delivered images.
    let client = reqwest::Client::new();
    let created: Value = client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["run.completed"]}))
        .send()
        .await
        .expect("endpoint")
        .json()
        .await
        .expect("json");
    let endpoint_id = created["id"].as_str().expect("endpoint id").to_string();
    let run: Value = client
        .post(app.url("/api/v1/runs"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "contract", "models": ["flux-2", "flux-ultra-1-1"]}))
        .send()
        .await
        .expect("run")
        .json()
        .await
        .expect("json");
    let run_id = run["id"].as_str().expect("run id").to_string();
    let token = tokio_util::sync::CancellationToken::new();
    faceoff::jobs::spawn_workers(
        app.pool.clone(),
        app.state.store.clone(),
        app.state.providers.clone(),
        faceoff::jobs::WorkerOptions {
            workers: 2,
            lease: std::time::Duration::from_secs(30),
            idle_poll: std::time::Duration::from_millis(50),
            per_provider: 8,
            max_transient: 1,
            running_limits: faceoff::jobs::RunningLimits::NONE,
        },
        token.clone(),
    );
    // The run's `run.completed` delivery is written in its last job's settlement. Waiting for the
    // settlements (rather than polling the deliveries) says what held a job up if one never
    // settles; the wait is long because the two jobs render real images on a machine that runs
    // the rest of the suite too.
    let run_uuid: Uuid = run_id.parse().expect("run id");
    crate::helpers::settled_within(&app.pool, run_uuid, std::time::Duration::from_secs(120)).await;
    let delivery_id: Uuid = sqlx::query_scalar("SELECT delivery_id FROM webhook_delivery LIMIT 1")
        .fetch_optional(&app.pool)
        .await
        .expect("deliveries")
        .expect("the run's last settlement wrote its run.completed delivery");
    token.cancel();
    let job_id = run["jobs"][0]["id"].as_str().expect("job id").to_string();

    let mut contract = Contract { app: &app, doc, checked: 0, statuses: BTreeMap::new(), failures: Vec::new() };
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method_name, op) in item.as_object().expect("item") {
            let method = Method::from_bytes(method_name.to_uppercase().as_bytes()).expect("method");
            operations += 1;
            let public = op["security"].as_array().is_some_and(|s| s.iter().all(|r| r == &json!({})));
            let mut ids = BTreeMap::from([
                ("id", run_id.clone()),
                ("job_id", job_id.clone()),
                ("use_case", "portrait".to_string()),
            ]);
            if path.starts_with("/api/v1/webhooks/") {
                ids.insert("id", endpoint_id.clone());
                ids.insert("delivery_id", delivery_id.to_string());
            }
            if method == Method::DELETE {
                // A throwaway endpoint: the others keep theirs.
                let input = faceoff::webhooks::EndpointInput {
                    url: "http://127.0.0.1:9/x".into(),
                    description: String::new(),
                    events: vec![faceoff::webhooks::EventType::CreditsLow],
                    credits_low_threshold: 1,
                };
                let throwaway = faceoff::webhooks::create(&app.pool, user.id, "http://127.0.0.1:9/x", &input)
                    .await
                    .expect("endpoint");
                ids.insert("id", throwaway.endpoint_id.to_string());
            }
            let good_path = concrete(path, &ids);
            let body_media = op.pointer("/requestBody/content/application~1json");
            let body_schema = body_media.and_then(|m| m.get("schema")).cloned();
            let example = body_media.and_then(|media| {
                media.get("example").cloned().or_else(|| resolve(doc, media.get("schema")?).get("example").cloned())
            });
            if let (Some(schema), Some(example)) = (&body_schema, &example) {
                let found = errors(&standalone(doc, schema), example);
                assert!(
                    found.is_empty(),
                    "{method} {path}: the documented example does not match its schema: {found:?}"
                );
            }
            assert!(body_schema.is_none() || example.is_some(), "{method} {path}: a body without an example");
            let mut headers: Vec<(String, String)> = Vec::new();
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "header" {
                    let value = param["example"].as_str().map(str::to_string).unwrap_or_else(|| "x".into());
                    headers.push((
                        param["name"].as_str().unwrap_or_default().to_string(),
                        format!("{value}-{}", Uuid::new_v4()),
                    ));
                }
            }
            let json_body = |value: &Value| Some(("application/json".to_string(), value.to_string().into_bytes()));
            let call = |what: &str, path: &str, key: Option<&str>, body: Option<(String, Vec<u8>)>| Call {
                what: what.to_string(),
                method: method.clone(),
                path: path.to_string(),
                key: key.map(str::to_string),
                headers: headers.clone(),
                body,
            };

            // Valid: the documented example, with real ids.
            let body = example.as_ref().and_then(json_body);
            let expected: Vec<u16> = (200..300).collect();
            contract.check(op, call("valid", &good_path, Some(&key), body.clone()), Some(&expected)).await;
            if !public {
                // Without a key, and with a revoked-looking one.
                contract.check(op, call("no key", &good_path, None, body.clone()), Some(&[401])).await;
                contract
                    .check(op, call("unknown key", &good_path, Some("fo_unknown"), body.clone()), Some(&[401]))
                    .await;
            }
            // Ids that name nothing.
            if path.contains('{') {
                let unknown = concrete(path, &BTreeMap::new());
                contract.check(op, call("unknown ids", &unknown, Some(&key), body.clone()), Some(&[404])).await;
                let garbage =
                    path.replace("{id}", "not-an-id").replace("{job_id}", "x").replace("{delivery_id}", "%20");
                contract.check(op, call("malformed ids", &garbage, Some(&key), body.clone()), Some(&[404])).await;
            }
            // Query parameters of the wrong type or out of range.
            for param in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query") {
                let name = param["name"].as_str().unwrap_or_default();
                for (value, expect) in
                    [("abc", &[400, 422][..]), ("0", &[400, 422]), ("100000", &[400, 422]), ("%00", &[400])]
                {
                    let path = format!("{good_path}?{name}={value}");
                    contract.check(op, call(&format!("{name}={value}"), &path, Some(&key), None), Some(expect)).await;
                }
            }
            // Bodies that are not what the document says.
            if let (Some(schema), Some(example)) = (&body_schema, &example) {
                let invalid: &[u16] = &[400, 422];
                contract
                    .check(
                        op,
                        call(
                            "malformed JSON",
                            &good_path,
                            Some(&key),
                            Some(("application/json".into(), b"{nope".to_vec())),
                        ),
                        Some(&[400]),
                    )
                    .await;
                contract
                    .check(
                        op,
                        call("not JSON", &good_path, Some(&key), Some(("text/plain".into(), b"hello".to_vec()))),
                        Some(&[415]),
                    )
                    .await;
                contract.check(op, call("an array", &good_path, Some(&key), json_body(&json!([]))), Some(&[422])).await;
                let schema = resolve(doc, schema);
                let required: Vec<&str> =
                    schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                if !required.is_empty() {
                    contract
                        .check(op, call("an empty object", &good_path, Some(&key), json_body(&json!({}))), Some(&[422]))
                        .await;
                }
                for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                    let mut wrong = example.clone();
                    wrong[name] = wrong_value(doc, property);
                    contract
                        .check(
                            op,
                            call(&format!("{name} of the wrong type"), &good_path, Some(&key), json_body(&wrong)),
                            Some(invalid),
                        )
                        .await;
                    if required.contains(&name.as_str()) {
                        let mut without = example.clone();
                        without.as_object_mut().expect("object").remove(name);
                        contract
                            .check(
                                op,
                                call(&format!("without {name}"), &good_path, Some(&key), json_body(&without)),
                                Some(&[422]),
                            )
                            .await;
                    }
                    let mut nul = example.clone();
                    nul[name] = json!("a\u{0}b");
                    contract
                        .check(
                            op,
                            call(&format!("{name} with a NUL"), &good_path, Some(&key), json_body(&nul)),
                            Some(&[400]),
                        )
                        .await;
                }
            }
        }
    }
    println!(
        "contract: {operations} operations, {} requests, statuses {:?}, {} failures",
        contract.checked,
        contract.statuses,
        contract.failures.len()
    );
    assert!(contract.failures.is_empty(), "answers that break the contract:\n{}", contract.failures.join("\n"));
    assert!(operations >= 16 && contract.checked > 140, "{operations} operations, {} requests", contract.checked);
    app.assert_invariants().await;
}
