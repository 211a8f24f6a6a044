//! The edge, walked route by route: every path of the application's route table
//! (`faceoff::app::routes()`, the same table the router is built from, so a route added later is
//! walked too) is sent every state-changing method, and each one that exists must refuse
//! - a forged or missing CSRF token (also from a signed-in browser, and a token minted for
//!   another browser), and
//! - a visitor, where a session is needed (even with a valid visitor token),
//!
//! and every private page must send visitors to the log-in page. Routes that take no cookies
//! (the JSON API with its keys, Stripe's signed webhook) must refuse without their credential.

use faceoff::accounts::{self, Role};
use reqwest::{Method, StatusCode};

use crate::helpers::{Browser, TestApp};

/// Pages anyone may see.
const PUBLIC_PAGES: &[&str] = &[
    "/",
    "/models",
    "/models/{slug}",
    "/compare",
    "/compare/{pair}",
    "/compare/{pair}/{use_case}",
    "/use-cases/{use_case}",
    "/compare/{pair}/{use_case}/look",
    "/sitemap.xml",
    "/robots.txt",
    "/healthz",
    "/readyz",
    "/signup",
    "/login",
    "/docs/api",
    "/leaderboard",
    "/leaderboard/{use_case}",
    "/signup/check-email",
    "/verify-email/{token}",
    "/forgot-password",
    "/reset-password/{token}",
    // Public images for anyone, private ones for their owner only (tests/api/media.rs).
    "/media/{*key}",
    // Published runs (tests/api/sharing.rs) and the comparison pages' social cards.
    "/s/{share_id}",
    "/s/{share_id}/images/{n}",
    "/s/{share_id}/thumbs/{n}",
    "/s/{share_id}/card.png",
    "/s/{share_id}/download.zip",
    "/compare/{pair}/card.png",
    "/compare/{pair}/{use_case}/card.png",
];

/// State-changing routes a visitor may use (with a valid token).
const VISITOR_FORMS: &[&str] =
    &["/signup", "/login", "/logout", "/forgot-password", "/reset-password/{token}", "/verify-email/{token}"];

/// How a route that takes no cookies authenticates its requests.
fn cookieless(path: &str) -> Option<&'static str> {
    if path.starts_with("/api/") {
        Some("an API key")
    } else if path.starts_with("/webhooks/") {
        Some("a signature")
    } else {
        None
    }
}

/// A concrete URL path for a route path with placeholders.
fn concrete(path: &str) -> String {
    path.replace("{slug}", "flux-2")
        .replace("{pair}", "flux-2-vs-flux-ultra-1-1")
        .replace("{use_case}", "portrait")
        .replace("{id}", "0196f7a0-0000-7000-8000-000000000001")
        .replace("{payment_id}", "0196f7a0-0000-7000-8000-000000000002")
        .replace("{job_id}", "0196f7a0-0000-7000-8000-000000000003")
        .replace("{delivery_id}", "0196f7a0-0000-7000-8000-000000000004")
        .replace("{*key}", "runs/nothing/here.jpg")
        .replace("{letter}", "a")
        .replace("{share_id}", "AAAAAAAAAAAAAAAAAAAAAA")
        .replace("{n}", "1")
        .replace("{report_id}", "1")
        .replace("{token}", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
}

const UNSAFE: [Method; 4] = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

async fn send(browser: &Browser, method: &Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut form = vec![("name", "x"), ("email", "x@example.com"), ("password", "long enough password")];
    if let Some(token) = token {
        form.push(("csrf_token", token));
    }
    browser.client.request(method.clone(), browser.url(path)).form(&form).send().await.expect("request")
}

fn location(response: &reqwest::Response) -> String {
    response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

async fn assert_login_redirect(response: reqwest::Response, what: &str) {
    let status = response.status();
    let to = location(&response);
    assert!(
        status == StatusCode::SEE_OTHER && to.starts_with("/login?next="),
        "{what}: expected a redirect to the log-in page, got {status} {to} {}",
        response.text().await.unwrap_or_default()
    );
}

async fn assert_csrf_refused(response: reqwest::Response, what: &str) {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(
        status == StatusCode::FORBIDDEN && body.contains("did not come from this site"),
        "{what}: expected the CSRF refusal (403), got {status}: {}",
        body.chars().take(300).collect::<String>()
    );
}

async fn assert_json_error(response: reqwest::Response, status: StatusCode, code: &str, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    let body: serde_json::Value = response.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
}

#[tokio::test]
async fn every_state_changing_route_refuses_forged_forms_and_missing_sign_ins() {
    let app = TestApp::spawn().await;
    let paths = faceoff::app::routes().paths().to_vec();
    assert!(paths.len() > 20, "the route table is listed: {paths:?}");

    // An administrator's browser (so admin routes get as far as their CSRF check), a visitor's
    // with a valid visitor token, and an attacker's with tokens of its own.
    let admin_user = app.create_user("root@example.com", 100).await;
    accounts::set_role(&app.pool, &admin_user.email, Role::Admin).await.expect("promote");
    let admin = app.browser();
    admin.sign_in(&admin_user).await;
    let admin_token = admin.token("/account", None).await;
    let visitor = app.browser();
    let visitor_token = visitor.token("/login", Some("/login")).await;
    let attacker = app.browser();
    let attacker_user = app.create_user("mallory@example.com", 100).await;
    attacker.sign_in(&attacker_user).await;
    let attacker_token = attacker.token("/account", None).await;

    let (mut forms, mut pages, mut cookieless_routes) = (0, 0, 0);
    for path in &paths {
        let url = concrete(path);
        for method in &UNSAFE {
            let what = format!("{method} {path}");
            let first = send(&visitor, method, &url, None).await;
            if first.status() == StatusCode::METHOD_NOT_ALLOWED {
                continue;
            }
            if let Some(credential) = cookieless(path) {
                cookieless_routes += 1;
                let what = format!("{what} (needs {credential})");
                let (status, code) = if path.starts_with("/api/") {
                    (StatusCode::UNAUTHORIZED, "unauthorized")
                } else {
                    (StatusCode::BAD_REQUEST, "invalid_signature")
                };
                assert_json_error(first, status, code, &what).await;
                // A signed-in browser's cookies are worth nothing here.
                assert_json_error(send(&admin, method, &url, Some(&admin_token)).await, status, code, &what).await;
                continue;
            }
            forms += 1;
            if VISITOR_FORMS.contains(path) {
                assert_csrf_refused(first, &format!("{what} by a visitor without a token")).await;
            } else {
                assert_login_redirect(first, &format!("{what} by a visitor")).await;
                let with_token = send(&visitor, method, &url, Some(&visitor_token)).await;
                assert_login_redirect(with_token, &format!("{what} by a visitor with a valid token")).await;
            }
            let forged = [
                ("no token", None),
                ("a forged token", Some("forged")),
                ("a visitor's token", Some(visitor_token.as_str())),
                ("another browser's token", Some(attacker_token.as_str())),
            ];
            for (kind, token) in forged {
                let response = send(&admin, method, &url, token).await;
                assert_csrf_refused(response, &format!("{what} signed in with {kind}")).await;
            }
        }
        // Private pages send visitors to the log-in page.
        if cookieless(path).is_none() && !PUBLIC_PAGES.contains(path) {
            let response = visitor.get(&url).await;
            if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                pages += 1;
                assert_login_redirect(response, &format!("GET {path} by a visitor")).await;
            }
        }
    }
    assert!(admin.is_signed_in().await, "nothing above signed the administrator out");
    println!(
        "walked {} paths: {forms} state-changing form routes, {pages} private pages, {cookieless_routes} cookieless routes",
        paths.len()
    );
    assert!(forms >= 10 && pages >= 8 && cookieless_routes >= 3, "{forms} {pages} {cookieless_routes}");
}

#[tokio::test]
async fn administrator_routes_refuse_other_users() {
    let app = TestApp::spawn().await;
    let user = app.create_user("user@example.com", 100).await;
    let browser = app.browser();
    browser.sign_in(&user).await;
    let token = browser.token("/account", None).await;
    for path in faceoff::app::routes().paths().iter().filter(|p| p.starts_with("/admin")) {
        let url = concrete(path);
        let response = browser.get(&url).await;
        if response.status() != StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "GET {path}");
        }
        let response = send(&browser, &Method::POST, &url, Some(&token)).await;
        if response.status() != StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "POST {path}");
        }
    }
}
