//! Accounts over HTTP: sign-up, log-in, sessions, CSRF, rate limits, the account page, the
//! admin page and the admin grant used by the CLI.

use axum::http::HeaderName;
use faceoff::{
    accounts::{
        self,
        admin::{self, AdjustError},
    },
    ledger,
};
use reqwest::{Client, StatusCode, cookie::CookieStore};

use crate::helpers::{Page, TestApp, new_client};

const PASSWORD: &str = "correct horse battery staple";

/// GETs `path` with `client` and returns the CSRF token of its first form.
async fn token(app: &TestApp, client: &Client, path: &str) -> String {
    let body = client.get(app.url(path)).send().await.expect("GET").text().await.expect("body");
    Page::parse(&body).attr("input[name=csrf_token]", "value").unwrap_or_else(|| panic!("{path}: no csrf_token"))
}

async fn post(app: &TestApp, client: &Client, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client.post(app.url(path)).form(form).send().await.expect("POST")
}

async fn signup_with(app: &TestApp, client: &Client, email: &str, password: &str) -> reqwest::Response {
    let csrf = token(app, client, "/signup").await;
    post(app, client, "/signup", &[("email", email), ("password", password), ("csrf_token", &csrf)]).await
}

async fn login_with(app: &TestApp, client: &Client, email: &str, password: &str) -> reqwest::Response {
    let csrf = token(app, client, "/login").await;
    post(app, client, "/login", &[("email", email), ("password", password), ("csrf_token", &csrf)]).await
}

fn location(response: &reqwest::Response) -> String {
    response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn page_of(response: reqwest::Response) -> Page {
    Page::parse(&response.text().await.expect("body"))
}

/// Is `client` signed in? (`/account` answers 200 when it is, and redirects to log in when not.)
async fn signed_in(app: &TestApp, client: &Client) -> bool {
    let response = client.get(app.url("/account")).send().await.expect("GET /account");
    match response.status() {
        StatusCode::OK => true,
        StatusCode::SEE_OTHER => {
            assert!(location(&response).starts_with("/login"), "{}", location(&response));
            false
        }
        other => panic!("/account answered {other}"),
    }
}

/// The session cookie's value in `jar`.
fn session_cookie(app: &TestApp, jar: &reqwest::cookie::Jar) -> String {
    let url: reqwest::Url = app.url("/").parse().expect("url");
    let header = jar.cookies(&url).expect("cookies");
    header
        .to_str()
        .expect("ascii")
        .split("; ")
        .find_map(|c| c.strip_prefix("faceoff_session="))
        .expect("a session cookie")
        .to_string()
}

/// A new browser that presents `cookie` as its session.
fn browser_with_cookie(app: &TestApp, cookie: &str) -> Client {
    let (client, jar) = new_client();
    let url: reqwest::Url = app.url("/").parse().expect("url");
    jar.add_cookie_str(&format!("faceoff_session={cookie}; Path=/"), &url);
    client
}

async fn user_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM app_user").fetch_one(&app.pool).await.expect("count")
}

#[tokio::test]
async fn signup_signs_in_grants_the_bonus_and_records_it() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page("/signup").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("signup");
    assert_eq!(page.attr(".auth-switch a", "href").as_deref(), Some("/login"), "links to log-in");
    assert_eq!(page.count("form[action=\"/signup\"] input[name=email]"), 1);

    let response = signup_with(&app, &app.client, "  New.Person@Example.com ", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    let cookie =
        response.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join("\n");
    assert!(cookie.contains("faceoff_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");

    let (_, home) = app.page("/").await;
    assert_eq!(home.text("[data-testid=balance]").as_deref(), Some("100"));
    let user = accounts::find_by_email(&app.pool, "new.person@example.com").await.expect("db").expect("user");
    assert_eq!(user.email, "New.Person@Example.com", "stored trimmed, case kept");
    assert!(user.password_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", user.password_hash);
    let history = ledger::history(&app.pool, user.id, 10, 0).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].label(), history[0].amount, history[0].balance_after), ("Sign-up bonus", 100, 100));

    // Signed in: the sign-up and log-in pages send the user on.
    let response = app.get("/signup").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, account) = app.page("/account").await;
    assert_eq!(status, StatusCode::OK);
    account.assert_well_formed("account");
    assert_eq!(account.text("[data-testid=account-email]").as_deref(), Some("New.Person@Example.com"));
    assert_eq!(account.text("[data-testid=account-available]").as_deref(), Some("100"));
}

#[tokio::test]
async fn signup_refuses_a_taken_email_and_bad_input_keeping_what_was_typed() {
    let app = TestApp::spawn().await;
    assert_eq!(signup_with(&app, &app.client, "ann@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);

    let (other, _) = new_client();
    let response = signup_with(&app, &other, "  ANN@Example.COM  ", "another password").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = page_of(response).await;
    page.assert_well_formed("signup with errors");
    assert!(page.text("#email-error").is_some_and(|e| e.contains("already exists")), "{:?}", page.text("#email-error"));
    assert_eq!(page.attr("input[name=email]", "value").as_deref(), Some("ANN@Example.COM"));
    assert_eq!(page.attr("input[name=password]", "value"), None, "the password is never echoed");
    assert!(!page.source.contains("another password"));
    assert_eq!(user_count(&app).await, 1);

    let response = signup_with(&app, &other, "bob@example.com", "short").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = page_of(response).await;
    assert!(page.text("#password-error").is_some_and(|e| e.contains("at least 8")));
    assert_eq!(page.attr("input[name=email]", "value").as_deref(), Some("bob@example.com"));
    let response = signup_with(&app, &other, "bob@example.com", &"x".repeat(129)).await;
    assert!(page_of(response).await.text("#password-error").is_some_and(|e| e.contains("at most 128")));
    let response = signup_with(&app, &other, "not-an-email", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page_of(response).await.text("#email-error").is_some());
    assert_eq!(user_count(&app).await, 1);
    assert!(!signed_in(&app, &other).await);
}

#[tokio::test]
async fn login_failures_say_the_same_thing_and_next_is_followed_only_locally() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page("/login?next=/studio%3Fmodels%3Dflux-2").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("login");
    assert_eq!(page.attr(".auth-switch a", "href").as_deref(), Some("/signup?next=%2Fstudio%3Fmodels%3Dflux-2"));
    assert_eq!(page.attr("input[name=next]", "value").as_deref(), Some("/studio?models=flux-2"));

    let (creator, _) = new_client();
    signup_with(&app, &creator, "carol@example.com", PASSWORD).await;

    let wrong_password = login_with(&app, &app.client, "carol@example.com", "not the password").await;
    assert_eq!(wrong_password.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let wrong_password = page_of(wrong_password).await;
    let unknown = login_with(&app, &app.client, "nobody@example.com", "not the password").await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = page_of(unknown).await;
    for page in [&wrong_password, &unknown] {
        page.assert_well_formed("login with errors");
        assert_eq!(page.text("#password-error").as_deref(), Some("invalid email or password"));
    }
    assert_eq!(unknown.attr("input[name=email]", "value").as_deref(), Some("nobody@example.com"));
    assert!(!signed_in(&app, &app.client).await);

    // A local next is followed (303), with the email in any case and with spaces.
    let csrf = token(&app, &app.client, "/login").await;
    let response = post(
        &app,
        &app.client,
        "/login",
        &[
            ("email", " CAROL@example.com "),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
            ("next", "/studio?models=flux-2"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/studio?models=flux-2");
    assert!(signed_in(&app, &app.client).await);

    // Another site is never a destination.
    for evil in ["//evil.example/x", "https://evil.example/", "/\\evil.example"] {
        let (client, _) = new_client();
        let csrf = token(&app, &client, "/login").await;
        let response = post(
            &app,
            &client,
            "/login",
            &[("email", "carol@example.com"), ("password", PASSWORD), ("csrf_token", &csrf), ("next", evil)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/", "next={evil}");
    }
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let _ = token(&app, &app.client, "/signup").await;
    for form in [
        vec![("email", "eve@example.com"), ("password", PASSWORD)],
        vec![("email", "eve@example.com"), ("password", PASSWORD), ("csrf_token", "forged")],
    ] {
        let response = post(&app, &app.client, "/signup", &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let page = page_of(response).await;
        page.assert_well_formed("csrf failure");
        assert!(page.text("main").is_some_and(|t| t.contains("expired")), "{:?}", page.text("main"));
    }
    assert_eq!(user_count(&app).await, 0);

    // Log-in, log-out and the account forms too.
    signup_with(&app, &app.client, "eve@example.com", PASSWORD).await;
    let response = post(&app, &app.client, "/logout", &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(signed_in(&app, &app.client).await, "a forged log-out does not sign out");
    let response = post(
        &app,
        &app.client,
        "/account/password",
        &[("current_password", PASSWORD), ("new_password", "a brand new password"), ("csrf_token", "nope")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (other, _) = new_client();
    assert_eq!(login_with(&app, &other, "eve@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let response = post(&app, &app.client, "/account/sign-out-everywhere", &[("csrf_token", "")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(signed_in(&app, &other).await);
    let (third, _) = new_client();
    let response = post(&app, &third, "/login", &[("email", "eve@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(!signed_in(&app, &third).await);
}

#[tokio::test]
async fn login_and_signup_are_rate_limited() {
    let app = TestApp::spawn().await;
    let csrf = token(&app, &app.client, "/login").await;
    for i in 0..10 {
        let email = format!("guess{i}@example.com");
        let response = post(
            &app,
            &app.client,
            "/login",
            &[("email", &email), ("password", "wrong password"), ("csrf_token", &csrf)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "attempt {i}");
    }
    let response =
        post(&app, &app.client, "/login", &[("email", "guess@example.com"), ("password", "x"), ("csrf_token", &csrf)])
            .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 =
        response.headers()["retry-after"].to_str().expect("ascii").parse().expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let page = page_of(response).await;
    page.assert_well_formed("429");
    assert!(page.text("main").is_some_and(|t| t.contains("try again in")), "{:?}", page.text("main"));

    // Sign-up has its own budget, and it runs out the same way.
    let csrf = token(&app, &app.client, "/signup").await;
    let mut statuses = Vec::new();
    for i in 0..11 {
        let email = format!("new{i}@example.com");
        let response =
            post(&app, &app.client, "/signup", &[("email", &email), ("password", "short"), ("csrf_token", &csrf)])
                .await;
        statuses.push(response.status());
    }
    assert!(statuses[..10].iter().all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY), "{statuses:?}");
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
}

/// Ten failed log-ins from `forwarded` (as the proxy reports it), then the eleventh's status.
async fn eleventh_login_from(app: &TestApp, csrf: &str, forwarded: &str, round: &str) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for i in 0..11 {
        let email = format!("{round}{i}@example.com");
        let response = app
            .client
            .post(app.url("/login"))
            .header("x-forwarded-for", forwarded)
            .form(&[("email", email.as_str()), ("password", "wrong password"), ("csrf_token", csrf)])
            .send()
            .await
            .expect("POST /login");
        statuses.push(response.status());
    }
    statuses
}

#[tokio::test]
async fn behind_a_proxy_the_limit_counts_the_address_the_proxy_reports() {
    let app = TestApp::spawn_with(|c| c.client_ip_header = Some(HeaderName::from_static("x-forwarded-for"))).await;
    let csrf = token(&app, &app.client, "/login").await;
    // All requests come from 127.0.0.1; the proxy says they are two different clients. A client
    // cannot escape by prepending addresses: only the proxy's (last) entry counts.
    let first = eleventh_login_from(&app, &csrf, "198.51.100.1, 203.0.113.7", "a").await;
    assert!(first[..10].iter().all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY), "{first:?}");
    assert_eq!(first[10], StatusCode::TOO_MANY_REQUESTS);
    let spoofed = eleventh_login_from(&app, &csrf, "192.0.2.99, 203.0.113.7", "b").await;
    assert!(spoofed.iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{spoofed:?}");
    let other = eleventh_login_from(&app, &csrf, "203.0.113.8", "c").await;
    assert!(other[..10].iter().all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY), "{other:?}");
    assert_eq!(other[10], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn without_a_configured_proxy_forwarded_headers_are_ignored() {
    let app = TestApp::spawn().await;
    let csrf = token(&app, &app.client, "/login").await;
    let first = eleventh_login_from(&app, &csrf, "203.0.113.7", "a").await;
    assert_eq!(first[10], StatusCode::TOO_MANY_REQUESTS, "{first:?}");
    // A new forwarded address buys nothing: the peer (127.0.0.1) is what counts.
    let second = eleventh_login_from(&app, &csrf, "203.0.113.8", "b").await;
    assert_eq!(second[0], StatusCode::TOO_MANY_REQUESTS, "{second:?}");
}

#[tokio::test]
async fn sessions_survive_a_restart_and_are_rotated_at_login() {
    let app = TestApp::spawn().await;
    signup_with(&app, &app.client, "dave@example.com", PASSWORD).await;
    let app = app.restart().await;
    assert!(signed_in(&app, &app.client).await, "the session outlived the process");
    let (_, home) = app.page("/").await;
    assert_eq!(home.text("[data-testid=balance]").as_deref(), Some("100"));

    // Visitors get no session (nothing is stored for them), but an attacker may plant the id of a
    // session that exists in a victim's browser before the victim logs in...
    let planted = tower_sessions::session::Id::default().to_string();
    sqlx::query("INSERT INTO session (id, data, expiry_date) VALUES ($1, '{}', now() + interval '1 day')")
        .bind(&planted)
        .execute(&app.pool)
        .await
        .expect("planted session");
    let (victim, victim_jar) = new_client();
    let url: reqwest::Url = app.url("/").parse().expect("url");
    victim_jar.add_cookie_str(&format!("faceoff_session={planted}; Path=/"), &url);
    let csrf = token(&app, &victim, "/login").await;
    let before = session_cookie(&app, &victim_jar);
    assert_eq!(before, planted);
    let response =
        post(&app, &victim, "/login", &[("email", "dave@example.com"), ("password", PASSWORD), ("csrf_token", &csrf)])
            .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let after = session_cookie(&app, &victim_jar);
    assert_ne!(before, after, "log-in issues a new session id");
    assert!(signed_in(&app, &victim).await);
    // ...and it is worth nothing after the log-in.
    let attacker = browser_with_cookie(&app, &before);
    assert!(!signed_in(&app, &attacker).await);
    let (_, page) = {
        let response = attacker.get(app.url("/")).send().await.expect("GET");
        (response.status(), page_of(response).await)
    };
    assert_eq!(page.count("[data-testid=balance]"), 0);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let app = TestApp::spawn().await;
    signup_with(&app, &app.client, "erin@example.com", PASSWORD).await;
    let cookie = session_cookie(&app, &app.jar);
    let (_, home) = app.page("/").await;
    let csrf = home.attr("form[action=\"/logout\"] input[name=csrf_token]", "value").expect("log-out form");
    let response = post(&app, &app.client, "/logout", &[("csrf_token", &csrf)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    assert!(!signed_in(&app, &app.client).await);
    // The old cookie, replayed, is not a session any more.
    let replay = browser_with_cookie(&app, &cookie);
    assert!(!signed_in(&app, &replay).await);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM session WHERE id = $1")
        .bind(&cookie)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn changing_the_password_signs_out_other_sessions() {
    let app = TestApp::spawn().await;
    signup_with(&app, &app.client, "fay@example.com", PASSWORD).await;
    let (laptop, _) = new_client();
    login_with(&app, &laptop, "fay@example.com", PASSWORD).await;
    assert!(signed_in(&app, &laptop).await);

    let csrf = token(&app, &app.client, "/account").await;
    let response = post(
        &app,
        &app.client,
        "/account/password",
        &[("current_password", "not it at all"), ("new_password", "a brand new password"), ("csrf_token", &csrf)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = page_of(response).await;
    page.assert_well_formed("account with errors");
    assert!(page.text("#current_password-error").is_some());
    let response = post(
        &app,
        &app.client,
        "/account/password",
        &[("current_password", PASSWORD), ("new_password", "short"), ("csrf_token", &csrf)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page_of(response).await.text("#new_password-error").is_some());
    assert!(signed_in(&app, &laptop).await, "failed changes change nothing");

    let response = post(
        &app,
        &app.client,
        "/account/password",
        &[("current_password", PASSWORD), ("new_password", "a brand new password"), ("csrf_token", &csrf)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = page_of(response).await;
    assert!(page.text(".notice").is_some_and(|t| t.contains("password was changed")));
    assert!(signed_in(&app, &app.client).await, "this browser stays signed in");
    assert!(!signed_in(&app, &laptop).await, "other sessions end");
    let (fresh, _) = new_client();
    assert_eq!(login_with(&app, &fresh, "fay@example.com", PASSWORD).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        login_with(&app, &fresh, "fay@example.com", "a brand new password").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session() {
    let app = TestApp::spawn().await;
    signup_with(&app, &app.client, "gus@example.com", PASSWORD).await;
    let (phone, _) = new_client();
    login_with(&app, &phone, "gus@example.com", PASSWORD).await;
    let (bystander, _) = new_client();
    signup_with(&app, &bystander, "hal@example.com", PASSWORD).await;

    let csrf = token(&app, &app.client, "/account").await;
    let response = post(&app, &app.client, "/account/sign-out-everywhere", &[("csrf_token", &csrf)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login?notice=signed-out-everywhere");
    assert!(!signed_in(&app, &app.client).await);
    assert!(!signed_in(&app, &phone).await);
    assert!(signed_in(&app, &bystander).await, "other users keep their sessions");
    let (_, page) = app.page("/login?notice=signed-out-everywhere").await;
    page.assert_well_formed("login with a notice");
    assert!(page.text(".notice").is_some_and(|t| t.contains("signed out on every device")));
}

#[tokio::test]
async fn signup_goes_on_to_next_when_it_is_local() {
    let app = TestApp::spawn().await;
    let (_, page) = app.page("/signup?next=/studio%3Fmodels%3Dflux-2").await;
    page.assert_well_formed("signup with next");
    assert_eq!(page.attr(".auth-switch a", "href").as_deref(), Some("/login?next=%2Fstudio%3Fmodels%3Dflux-2"));
    let csrf = page.attr("input[name=csrf_token]", "value").expect("csrf");
    let next = page.attr("input[name=next]", "value").expect("next carried by the form");
    let response = post(
        &app,
        &app.client,
        "/signup",
        &[("email", "lee@example.com"), ("password", PASSWORD), ("csrf_token", &csrf), ("next", &next)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/studio?models=flux-2");
    let (other, _) = new_client();
    let csrf = token(&app, &other, "/signup").await;
    let response = post(
        &app,
        &other,
        "/signup",
        &[("email", "may@example.com"), ("password", PASSWORD), ("csrf_token", &csrf), ("next", "//evil.example")],
    )
    .await;
    assert_eq!(location(&response), "/");
}

#[tokio::test]
async fn the_account_page_needs_a_signed_in_user() {
    let app = TestApp::spawn().await;
    let response = app.get("/account").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login?next=%2Faccount");
}

#[tokio::test]
async fn the_admin_page_is_for_admins_and_adjusts_credits_through_the_ledger() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/admin").await.status(), StatusCode::SEE_OTHER, "anonymous: log in first");
    let customer = app.create_user("ida@example.com", 100).await;

    let (user_browser, _) = new_client();
    signup_with(&app, &user_browser, "jo@example.com", PASSWORD).await;
    let response = user_browser.get(app.url("/admin")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    page_of(response).await.assert_well_formed("admin 403");
    let csrf = token(&app, &user_browser, "/account").await;
    let response = post(
        &app,
        &user_browser,
        "/admin/adjust",
        &[("email", "ida@example.com"), ("amount", "1000"), ("reason", "free money"), ("csrf_token", &csrf)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let admin_user = app.create_user("admin@example.com", 0).await;
    admin::promote(&app.pool, "ADMIN@example.com").await.expect("promote");
    app.sign_in_as(&admin_user).await;
    let (status, page) = app.page("/admin").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("admin");
    let (status, page) = app.page("/admin?email=%20IDA%40example.com").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("admin with a user");
    assert_eq!(page.text("[data-testid=admin-available]").as_deref(), Some("100"));
    let csrf = page.attr("form[action=\"/admin/adjust\"] input[name=csrf_token]", "value").expect("form");
    let key = page.attr("input[name=idempotency_key]", "value").expect("key");
    let (status, page) = app.page("/admin?email=nobody%40example.com").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.text(".notice").is_some_and(|t| t.contains("No user")));

    // Add 50, with a reason; the same submission again (same key) adds nothing more.
    let form = [
        ("email", "ida@example.com"),
        ("amount", "50"),
        ("reason", "Apology for the outage"),
        ("idempotency_key", &key),
        ("csrf_token", &csrf),
    ];
    let response = post(&app, &app.client, "/admin/adjust", &form).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = page_of(response).await;
    page.assert_well_formed("admin after adjusting");
    assert!(page.text("[data-testid=admin-notice]").is_some_and(|t| t.contains("Added 50 credits")));
    assert_eq!(page.text("[data-testid=admin-available]").as_deref(), Some("150"));
    assert_eq!(post(&app, &app.client, "/admin/adjust", &form).await.status(), StatusCode::OK);
    assert_eq!(ledger::balance(&app.pool, customer.id).await.expect("b").available, 150);
    let history = ledger::history(&app.pool, customer.id, 10, 0).await.expect("history");
    assert_eq!(
        (history[0].kind.as_str(), history[0].memo.as_str(), history[0].amount),
        ("adjustment", "Apology for the outage", 50)
    );
    assert_eq!(history.len(), 2);

    // Bad input: no reason, a non-number, a removal larger than the balance.
    for (amount, reason, field) in
        [("10", "  ", "#reason-error"), ("ten", "why", "#amount-error"), ("-151", "clawback", "#amount-error")]
    {
        let form = [
            ("email", "ida@example.com"),
            ("amount", amount),
            ("reason", reason),
            ("idempotency_key", "k-bad"),
            ("csrf_token", &csrf),
        ];
        let response = post(&app, &app.client, "/admin/adjust", &form).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{amount} {reason:?}");
        let page = page_of(response).await;
        page.assert_well_formed("admin with errors");
        assert!(page.text(field).is_some(), "{field} for {amount} {reason:?}");
        assert_eq!(page.attr("input[name=amount]", "value").as_deref(), Some(amount));
    }
    // A removal within the balance works.
    let form = [
        ("email", "ida@example.com"),
        ("amount", "-150"),
        ("reason", "Chargeback"),
        ("idempotency_key", "k-remove"),
        ("csrf_token", &csrf),
    ];
    assert_eq!(post(&app, &app.client, "/admin/adjust", &form).await.status(), StatusCode::OK);
    assert_eq!(ledger::balance(&app.pool, customer.id).await.expect("b").available, 0);
    let mut conn = app.pool.acquire().await.expect("conn");
    assert!(ledger::check_invariants(&mut conn).await.expect("check").is_ok());
    assert_eq!(ledger::system_balance(&mut *conn, ledger::System::Adjustments).await.expect("adj"), 100);
}

#[tokio::test]
async fn the_cli_grant_adjusts_credits_and_never_goes_below_zero() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim@example.com", 100).await;
    let done = admin::adjust_credits(&app.pool, " KIM@example.com", 25, "Contest prize", "cli:1").await.expect("grant");
    assert_eq!((done.amount, done.balance.available, done.replayed), (25, 125, false));
    let again =
        admin::adjust_credits(&app.pool, "kim@example.com", 25, "Contest prize", "cli:1").await.expect("replay");
    assert!(again.replayed);
    assert!(matches!(
        admin::adjust_credits(&app.pool, "kim@example.com", 30, "Contest prize", "cli:1").await,
        Err(AdjustError::KeyConflict)
    ));
    let err =
        admin::adjust_credits(&app.pool, "kim@example.com", -126, "Clawback", "cli:2").await.expect_err("too much");
    assert!(matches!(err, AdjustError::Insufficient { need: 126, have: 125 }), "{err}");
    let done = admin::adjust_credits(&app.pool, "kim@example.com", -125, "Clawback", "cli:3").await.expect("remove");
    assert_eq!(done.balance.available, 0);
    assert!(matches!(
        admin::adjust_credits(&app.pool, "nobody@example.com", 5, "x", "cli:4").await,
        Err(AdjustError::UnknownUser(_))
    ));
    assert!(matches!(
        admin::adjust_credits(&app.pool, "kim@example.com", 0, "x", "cli:5").await,
        Err(AdjustError::InvalidAmount)
    ));
    assert!(matches!(
        admin::adjust_credits(&app.pool, "kim@example.com", 5, " ", "cli:6").await,
        Err(AdjustError::InvalidReason)
    ));
    let history = ledger::history(&app.pool, user.id, 10, 0).await.expect("history");
    let lines: Vec<_> = history.iter().map(|l| (l.kind.as_str(), l.amount, l.memo.as_str())).collect();
    assert_eq!(
        lines,
        [("adjustment", -125, "Clawback"), ("adjustment", 25, "Contest prize"), ("signup_bonus", 100, "Sign-up bonus")]
    );
    assert!(matches!(admin::promote(&app.pool, "nobody@example.com").await, Err(AdjustError::UnknownUser(_))));
    let mut conn = app.pool.acquire().await.expect("conn");
    assert!(ledger::check_invariants(&mut conn).await.expect("check").is_ok());
}
