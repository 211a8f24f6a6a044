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
use reqwest::StatusCode;

use crate::helpers::{Form, Page, TEST_PASSWORD as PASSWORD, TestApp, location};

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

    let response = app.browser.sign_up("  New.Person@Example.com ", PASSWORD).await;
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
async fn signup_answers_the_same_for_a_taken_email_and_refuses_bad_input_keeping_what_was_typed() {
    let app = TestApp::spawn().await;
    let new = app.browser.submit_sign_up("ann@example.com", PASSWORD).await;
    assert_eq!((new.status(), location(&new)), (StatusCode::SEE_OTHER, "/signup/check-email".to_string()));

    // The same answer for an address that has an account: nothing tells them apart.
    let other = app.browser();
    let taken = other.submit_sign_up("  ANN@Example.COM  ", "another password").await;
    assert_eq!((taken.status(), location(&taken)), (StatusCode::SEE_OTHER, "/signup/check-email".to_string()));
    assert_eq!(user_count(&app).await, 1);
    assert!(!other.is_signed_in().await && !app.browser.is_signed_in().await, "sign-up does not sign in");
    let (status, page) = other.page("/signup/check-email").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("check your inbox");

    let response = other.sign_up("bob@example.com", "short").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = Page::from_response(response).await;
    page.assert_well_formed("signup with errors");
    assert_eq!(page.attr("input[name=password]", "value"), None, "the password is never echoed");

    let response = other.sign_up("bob@example.com", "short").await;
    let page = Page::from_response(response).await;
    assert!(page.text("#password-error").is_some_and(|e| e.contains("at least 8")));
    assert_eq!(page.attr("input[name=email]", "value").as_deref(), Some("bob@example.com"));
    let response = other.sign_up("bob@example.com", &"x".repeat(129)).await;
    assert!(Page::from_response(response).await.text("#password-error").is_some_and(|e| e.contains("at most 128")));
    let response = other.sign_up("not-an-email", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(Page::from_response(response).await.text("#email-error").is_some());
    assert_eq!(user_count(&app).await, 1);
    assert!(!other.is_signed_in().await);
}

#[tokio::test]
async fn login_failures_say_the_same_thing_and_next_is_followed_only_locally() {
    let app = TestApp::spawn().await;
    let (status, page) = app.page("/login?next=/studio%3Fmodels%3Dflux-2").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("login");
    assert_eq!(page.attr(".auth-switch a", "href").as_deref(), Some("/signup?next=%2Fstudio%3Fmodels%3Dflux-2"));
    assert_eq!(page.attr("input[name=next]", "value").as_deref(), Some("/studio?models=flux-2"));

    app.browser().sign_up("carol@example.com", PASSWORD).await;

    let wrong_password = app.browser.log_in("carol@example.com", "not the password").await;
    assert_eq!(wrong_password.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let wrong_password = Page::from_response(wrong_password).await;
    let unknown = app.browser.log_in("nobody@example.com", "not the password").await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = Page::from_response(unknown).await;
    for page in [&wrong_password, &unknown] {
        page.assert_well_formed("login with errors");
        assert_eq!(page.text("#password-error").as_deref(), Some("invalid email or password"));
    }
    assert_eq!(unknown.attr("input[name=email]", "value").as_deref(), Some("nobody@example.com"));
    assert!(!app.browser.is_signed_in().await);

    // A local next is followed (303), with the email in any case and with spaces.
    let response = app
        .browser
        .submit(
            "/login",
            "/login",
            &[("email", " CAROL@example.com "), ("password", PASSWORD), ("next", "/studio?models=flux-2")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/studio?models=flux-2");
    assert!(app.browser.is_signed_in().await);

    // Another site is never a destination.
    for evil in ["//evil.example/x", "https://evil.example/", "/\\evil.example"] {
        let response = app
            .browser()
            .submit("/login", "/login", &[("email", "carol@example.com"), ("password", PASSWORD), ("next", evil)])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/", "next={evil}");
    }
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    // The browser has loaded the sign-up form (and has its CSRF cookie), but sends no token or
    // a wrong one.
    let _ = app.browser.token("/signup", Some("/signup")).await;
    for form in [
        vec![("email", "eve@example.com"), ("password", PASSWORD)],
        vec![("email", "eve@example.com"), ("password", PASSWORD), ("csrf_token", "forged")],
    ] {
        let response = app.browser.post_raw("/signup", &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let page = Page::from_response(response).await;
        page.assert_well_formed("csrf failure");
        assert!(page.text("main").is_some_and(|t| t.contains("expired")), "{:?}", page.text("main"));
    }
    assert_eq!(user_count(&app).await, 0);

    // Log-in, log-out and the account forms too.
    app.browser.sign_up("eve@example.com", PASSWORD).await;
    let response = app.browser.post_raw("/logout", &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(app.browser.is_signed_in().await, "a forged log-out does not sign out");
    let response = app
        .browser
        .post_raw(
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "a brand new password"), ("csrf_token", "nope")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let other = app.browser();
    assert_eq!(other.log_in("eve@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let response = app.browser.post_raw("/account/sign-out-everywhere", &[("csrf_token", "")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(other.is_signed_in().await);
    let third = app.browser();
    let response = third.post_raw("/login", &[("email", "eve@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(!third.is_signed_in().await);
}

#[tokio::test]
async fn a_token_is_good_only_in_the_browser_that_loaded_it_and_only_for_who_it_was_shown_to() {
    let app = TestApp::spawn().await;
    app.create_user("kit@example.com", 100).await;
    let credentials = [("email", "kit@example.com"), ("password", PASSWORD)];

    // A log-in form loaded by another browser: its token does not verify with this browser's
    // CSRF cookie.
    let elsewhere = app.browser().form("/login", "/login").await;
    let victim = app.browser();
    let own = victim.form("/login", "/login").await;
    assert!(victim.cookie("faceoff_csrf").is_some(), "loading a form sets the CSRF cookie");
    assert_eq!(elsewhere.submit(&victim, &credentials).await.status(), StatusCode::FORBIDDEN);
    assert!(!victim.is_signed_in().await);

    // The browser's own token, shown to a visitor, is worthless once that visitor has logged in.
    assert_eq!(own.submit(&victim, &credentials).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(victim.post_raw("/logout", &[("csrf_token", &own.token)]).await.status(), StatusCode::FORBIDDEN);
    assert!(victim.is_signed_in().await);
    let response = victim.submit("/", "/logout", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "a token shown to the signed-in user works");
    assert!(!victim.is_signed_in().await);
}

/// A first wait of a minute: however slow the machine is between two requests, a key that is
/// backing off stays blocked for the whole test (no timing luck).
fn slow_backoff(config: &mut faceoff::config::Config) {
    config.throttle.base_backoff = std::time::Duration::from_secs(60);
}

#[tokio::test]
async fn guessing_one_password_backs_off_exponentially_and_signups_are_limited() {
    let app = TestApp::spawn_with(slow_backoff).await;
    app.create_user("carol@example.com", 0).await;
    let login = app.browser.form("/login", "/login").await;
    let guess = || login.submit(&app.browser, &[("email", "carol@example.com"), ("password", "wrong password")]);
    for i in 0..5 {
        assert_eq!(guess().await.status(), StatusCode::UNPROCESSABLE_ENTITY, "free failure {i}");
    }
    let response = guess().await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 =
        response.headers()["retry-after"].to_str().expect("ascii").parse().expect("Retry-After in seconds");
    assert!((59..=60).contains(&retry_after), "the first wait: {retry_after}");
    let page = Page::from_response(response).await;
    page.assert_well_formed("429");
    assert!(page.text("main").is_some_and(|t| t.contains("try again in")), "{:?}", page.text("main"));

    // Sign-up attempts are limited per address (30 a minute: 30 at once, then one every 2 s).
    // On a loaded machine the attempts may take longer than 2 s, so count what refilled.
    let signup = app.browser.form("/signup", "/signup").await;
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..100 {
        let email = format!("new{i}@example.com");
        let response = signup.submit(&app.browser, &[("email", &email), ("password", "short")]).await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    let refilled = (started.elapsed().as_secs_f64() / 2.0).ceil() as usize;
    let allowed = statuses.len() - 1;
    assert!(statuses[..allowed].iter().all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    assert!((30..=30 + refilled).contains(&allowed), "{allowed} sign-ups allowed ({refilled} refilled)");
}

/// `n` failed log-ins (one email each) from `forwarded` (as the proxy reports it), through the
/// log-in form of the default browser; their statuses.
async fn failed_logins_from(app: &TestApp, forwarded: &str, round: &str, n: usize) -> Vec<StatusCode> {
    let (browser, login) = (&app.browser, app.browser.form("/login", "/login").await);
    let mut statuses = Vec::new();
    for i in 0..n {
        let email = format!("{round}{i}@example.com");
        let response = browser
            .client
            .post(browser.url(&login.action))
            .header("x-forwarded-for", forwarded)
            .form(&[("email", email.as_str()), ("password", "wrong password"), ("csrf_token", &login.token)])
            .send()
            .await
            .expect("POST /login");
        statuses.push(response.status());
    }
    statuses
}

#[tokio::test]
async fn behind_a_proxy_the_limit_counts_the_address_the_proxy_reports() {
    let app = TestApp::spawn_with(|c| {
        slow_backoff(c);
        c.client_ip_header = Some(HeaderName::from_static("x-forwarded-for"));
    })
    .await;
    // All requests come from 127.0.0.1; the proxy says they are two different clients. One
    // address trying many accounts backs off after 20 failures. A client cannot escape by
    // prepending addresses: only the proxy's (last) entry counts.
    let first = failed_logins_from(&app, "198.51.100.1, 203.0.113.7", "a", 21).await;
    assert!(first[..20].iter().all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY), "{first:?}");
    assert_eq!(first[20], StatusCode::TOO_MANY_REQUESTS);
    let spoofed = failed_logins_from(&app, "192.0.2.99, 203.0.113.7", "b", 3).await;
    assert!(spoofed.iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{spoofed:?}");
    let other = failed_logins_from(&app, "203.0.113.8", "c", 21).await;
    assert!(other[..20].iter().all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY), "{other:?}");
    assert_eq!(other[20], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn without_a_configured_proxy_forwarded_headers_are_ignored() {
    let app = TestApp::spawn_with(slow_backoff).await;
    let first = failed_logins_from(&app, "203.0.113.7", "a", 21).await;
    assert_eq!(first[20], StatusCode::TOO_MANY_REQUESTS, "{first:?}");
    // A new forwarded address buys nothing: the peer (127.0.0.1) is what counts.
    let second = failed_logins_from(&app, "203.0.113.8", "b", 1).await;
    assert_eq!(second[0], StatusCode::TOO_MANY_REQUESTS, "{second:?}");
}

#[tokio::test]
async fn wrong_passwords_from_many_addresses_do_not_lock_the_owner_out() {
    let app = TestApp::spawn_with(|c| {
        slow_backoff(c);
        c.client_ip_header = Some(HeaderName::from_static("x-forwarded-for"));
    })
    .await;
    let owner = app.create_user("dana@example.com", 100).await;
    // Eleven wrong passwords for the owner's email from eleven addresses, and more from one.
    let attacker = app.browser();
    let form = attacker.form("/login", "/login").await;
    let attempt = |address: String| {
        let attacker = &attacker;
        let token = form.token.clone();
        async move {
            attacker
                .client
                .post(attacker.url("/login"))
                .header("x-forwarded-for", address)
                .form(&[("email", "dana@example.com"), ("password", "not the password"), ("csrf_token", &token)])
                .send()
                .await
                .expect("POST /login")
                .status()
        }
    };
    for i in 0..11 {
        assert_eq!(attempt(format!("198.51.100.{i}")).await, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let mut last = StatusCode::OK;
    for _ in 0..8 {
        last = attempt("198.51.100.200".into()).await;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS, "the attacker is throttled");

    // The owner, from a fresh address, logs in at once...
    let browser = app.browser();
    let form = browser.form("/login", "/login").await;
    let response = browser
        .client
        .post(browser.url("/login"))
        .header("x-forwarded-for", "203.0.113.50")
        .form(&[("email", "dana@example.com"), ("password", owner.password.as_str()), ("csrf_token", &form.token)])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "the owner is not locked out");
    // ...and can change the password: others' failed logins do not count against it.
    let response = browser
        .submit(
            "/account",
            "/account/password",
            &[("current_password", owner.password.as_str()), ("new_password", "an entirely new password")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_browser_that_signed_in_before_keeps_its_own_budget() {
    let app = TestApp::spawn_with(slow_backoff).await;
    let owner = app.create_user("erin@example.com", 100).await;
    // The owner's browser signs in once (and gets its device cookie), then signs out.
    let trusted = app.browser();
    trusted.sign_in(&owner).await;
    assert!(trusted.cookie("faceoff_device").is_some(), "a device cookie after signing in");
    assert_eq!(trusted.submit("/", "/logout", &[]).await.status(), StatusCode::SEE_OTHER);
    // An attacker at the same address (all tests come from 127.0.0.1) exhausts its budget.
    let attacker = app.browser();
    let form = attacker.form("/login", "/login").await;
    let mut last = StatusCode::OK;
    for _ in 0..8 {
        last = form.submit(&attacker, &[("email", "erin@example.com"), ("password", "guess")]).await.status();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // The owner's browser still gets in; a new browser at that address does not, yet.
    assert_eq!(trusted.log_in("erin@example.com", &owner.password).await.status(), StatusCode::SEE_OTHER);
    let stranger = app.browser();
    assert_eq!(stranger.log_in("erin@example.com", &owner.password).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // A device cookie made up by the attacker (or issued for another account) is worth nothing.
    let mut forged = trusted.cookie("faceoff_device").expect("cookie");
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.pop();
    forged.push_str(last);
    attacker.add_cookie("faceoff_device", &forged);
    assert_eq!(attacker.log_in("erin@example.com", &owner.password).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn over_long_emails_are_refused_before_any_limiter_or_database_work() {
    let app = TestApp::spawn().await;
    let long = format!("{}@example.com", "a".repeat(60_000));
    for _ in 0..40 {
        let response = app.browser.submit("/login", "/login", &[("email", &long), ("password", "whatever")]).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = Page::from_response(response).await;
        assert!(page.source.contains("too long"));
        assert!(!page.source.contains(&"a".repeat(300)), "the page does not echo it back");
    }
    // Forty refusals counted nothing: the address still has its whole budget.
    let user = app.create_user("fay@example.com", 0).await;
    app.browser.sign_in(&user).await;
}

#[tokio::test]
async fn sessions_survive_a_restart_and_are_rotated_at_login() {
    let app = TestApp::spawn().await;
    app.browser.sign_up("dave@example.com", PASSWORD).await;
    let app = app.restart().await;
    assert!(app.browser.is_signed_in().await, "the session outlived the process");
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
    let victim = app.browser();
    victim.add_cookie("faceoff_session", &planted);
    let login = victim.form("/login", "/login").await;
    let before = victim.cookie("faceoff_session").expect("a session cookie");
    assert_eq!(before, planted);
    let response = login.submit(&victim, &[("email", "dave@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let after = victim.cookie("faceoff_session").expect("a session cookie");
    assert_ne!(before, after, "log-in issues a new session id");
    assert!(victim.is_signed_in().await);
    // ...and it is worth nothing after the log-in.
    let attacker = app.browser();
    attacker.add_cookie("faceoff_session", &before);
    assert!(!attacker.is_signed_in().await);
    assert_eq!(attacker.get("/account").await.status(), StatusCode::SEE_OTHER, "/account sends it to log in");
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let app = TestApp::spawn().await;
    app.browser.sign_up("erin@example.com", PASSWORD).await;
    let cookie = app.browser.cookie("faceoff_session").expect("a session cookie");
    let response = app.browser.submit("/", "/logout", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    assert!(!app.browser.is_signed_in().await);
    // The old cookie, replayed, is not a session any more.
    let replay = app.browser();
    replay.add_cookie("faceoff_session", &cookie);
    assert!(!replay.is_signed_in().await);
    // And the server tells the browser to forget it, so it stops sending a dead session (which
    // would cost a session lookup on every request) with each page.
    let response = reqwest::Client::new()
        .get(app.url("/"))
        .header("cookie", format!("faceoff_session={cookie}"))
        .send()
        .await
        .expect("request");
    let cleared =
        response.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).any(|v| {
            v.starts_with("faceoff_session=;") || (v.starts_with("faceoff_session=") && v.contains("Max-Age=0"))
        });
    let set_cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert!(cleared, "the stale cookie is removed: {set_cookies:?}");
    assert_eq!(replay.cookie("faceoff_session"), None, "the browser forgot it");
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
    app.browser.sign_up("fay@example.com", PASSWORD).await;
    let laptop = app.browser();
    laptop.log_in("fay@example.com", PASSWORD).await;
    assert!(laptop.is_signed_in().await);

    let browser = &app.browser;
    let change = |current: &'static str, new: &'static str| async move {
        browser.submit("/account", "/account/password", &[("current_password", current), ("new_password", new)]).await
    };
    let response = change("not it at all", "a brand new password").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = Page::from_response(response).await;
    page.assert_well_formed("account with errors");
    assert!(page.text("#current_password-error").is_some());
    let response = change(PASSWORD, "short").await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(Page::from_response(response).await.text("#new_password-error").is_some());
    assert!(laptop.is_signed_in().await, "failed changes change nothing");

    let response = change(PASSWORD, "a brand new password").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = Page::from_response(response).await;
    assert!(page.text(".notice").is_some_and(|t| t.contains("password was changed")));
    assert!(app.browser.is_signed_in().await, "this browser stays signed in");
    assert!(!laptop.is_signed_in().await, "other sessions end");
    let fresh = app.browser();
    assert_eq!(fresh.log_in("fay@example.com", PASSWORD).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fresh.log_in("fay@example.com", "a brand new password").await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session() {
    let app = TestApp::spawn().await;
    app.browser.sign_up("gus@example.com", PASSWORD).await;
    let phone = app.browser();
    phone.log_in("gus@example.com", PASSWORD).await;
    let bystander = app.browser();
    bystander.sign_up("hal@example.com", PASSWORD).await;

    let response = app.browser.submit("/account", "/account/sign-out-everywhere", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login?notice=signed-out-everywhere");
    assert!(!app.browser.is_signed_in().await);
    assert!(!phone.is_signed_in().await);
    assert!(bystander.is_signed_in().await, "other users keep their sessions");
    let (_, page) = app.page("/login?notice=signed-out-everywhere").await;
    page.assert_well_formed("login with a notice");
    assert!(page.text(".notice").is_some_and(|t| t.contains("signed out on every device")));
}

#[tokio::test]
async fn signup_carries_next_to_the_log_in_link_when_it_is_local() {
    let app = TestApp::spawn().await;
    let (_, page) = app.page("/signup?next=/studio%3Fmodels%3Dflux-2").await;
    page.assert_well_formed("signup with next");
    assert_eq!(page.attr(".auth-switch a", "href").as_deref(), Some("/login?next=%2Fstudio%3Fmodels%3Dflux-2"));
    let signup = Form::on(&page, "/signup");
    let next = page.attr("form[action=\"/signup\"] input[name=next]", "value").expect("next carried by the form");
    let response =
        signup.submit(&app.browser, &[("email", "lee@example.com"), ("password", PASSWORD), ("next", &next)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/signup/check-email?next=%2Fstudio%3Fmodels%3Dflux-2");
    let (_, page) = app.page(&location(&response)).await;
    assert_eq!(page.attr(".auth-switch a", "href").as_deref(), Some("/login?next=%2Fstudio%3Fmodels%3Dflux-2"));
    let response = app
        .browser()
        .submit(
            "/signup",
            "/signup",
            &[("email", "may@example.com"), ("password", PASSWORD), ("next", "//evil.example")],
        )
        .await;
    assert_eq!(location(&response), "/signup/check-email");
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

    let user_browser = app.browser();
    user_browser.sign_up("jo@example.com", PASSWORD).await;
    let response = user_browser.get("/admin").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    Page::from_response(response).await.assert_well_formed("admin 403");
    // A plain user who crafts the admin's form, with a valid token of their own, is refused.
    let csrf = user_browser.token("/account", None).await;
    let response = user_browser
        .post_raw(
            "/admin/adjust",
            &[("email", "ida@example.com"), ("amount", "1000"), ("reason", "free money"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let admin_user = app.create_user("admin@example.com", 0).await;
    admin::promote(&app.pool, "ADMIN@example.com").await.expect("promote");
    app.browser.sign_in(&admin_user).await;
    let (status, page) = app.page("/admin").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("admin");
    let (status, page) = app.page("/admin?email=%20IDA%40example.com").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("admin with a user");
    assert_eq!(page.text("[data-testid=admin-available]").as_deref(), Some("100"));
    let adjust = Form::on(&page, "/admin/adjust");
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
    ];
    let response = adjust.submit(&app.browser, &form).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = Page::from_response(response).await;
    page.assert_well_formed("admin after adjusting");
    assert!(page.text("[data-testid=admin-notice]").is_some_and(|t| t.contains("Added 50 credits")));
    assert_eq!(page.text("[data-testid=admin-available]").as_deref(), Some("150"));
    assert_eq!(adjust.submit(&app.browser, &form).await.status(), StatusCode::OK);
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
        let form = [("email", "ida@example.com"), ("amount", amount), ("reason", reason), ("idempotency_key", "k-bad")];
        let response = adjust.submit(&app.browser, &form).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{amount} {reason:?}");
        let page = Page::from_response(response).await;
        page.assert_well_formed("admin with errors");
        assert!(page.text(field).is_some(), "{field} for {amount} {reason:?}");
        assert_eq!(page.attr("input[name=amount]", "value").as_deref(), Some(amount));
    }
    // A removal within the balance works.
    let form =
        [("email", "ida@example.com"), ("amount", "-150"), ("reason", "Chargeback"), ("idempotency_key", "k-remove")];
    assert_eq!(adjust.submit(&app.browser, &form).await.status(), StatusCode::OK);
    assert_eq!(ledger::balance(&app.pool, customer.id).await.expect("b").available, 0);
    app.assert_invariants().await;
    let mut conn = app.pool.acquire().await.expect("conn");
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
    app.assert_invariants().await;
}
