//! Accounts that last: every mail-link flow end to end through a real SMTP server on loopback
//! (aiosmtpd's `Mailbox` handler, a Python package started by the test, which writes what it
//! receives to a Maildir we read): the mail arrives, its link works once, and an expired or
//! reused link is refused with a clear page. Also: the free credits once per normalized
//! address, deletion leaving no row or stored object of the user's content, the data export,
//! the sender with several instances, and the file outbox used when no SMTP is configured.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use faceoff::{accounts, config::Secret, jobs, ledger};
use reqwest::{StatusCode, multipart};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Browser, Form, Page, TEST_PASSWORD, TestApp, location};

const PASSWORD: &str = "a long enough password";

/// A real SMTP server on a free loopback port (see the module docs); stopped when dropped.
struct SmtpSink {
    child: Child,
    dir: PathBuf,
    port: u16,
}

/// One message as the sink received it.
#[derive(Debug, Clone)]
struct Received {
    to: String,
    subject: String,
    /// The whole message with quoted-printable soft breaks and `=3D` undone.
    body: String,
}

impl Received {
    /// The path (and query) of the first link to this site's `prefix` (e.g. `/verify-email/`).
    fn link(&self, prefix: &str) -> String {
        let at = self.body.find(prefix).unwrap_or_else(|| panic!("no {prefix} link in {}", self.body));
        let rest = &self.body[at..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '<').unwrap_or(rest.len());
        rest[..end].to_string()
    }
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let dir = std::env::temp_dir().join(format!("faceoff-smtp-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (the SMTP sink needs `pip install aiosmtpd`, as .ci/run does)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the SMTP sink (python3 -m aiosmtpd) did not start: is aiosmtpd installed?"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SmtpSink { child, dir, port }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn messages(&self) -> Vec<Received> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) else { continue };
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            // In delivery order: Python's Maildir names files `{secs}.M{micros}P{pid}Q{count}.{host}`
            // with the microseconds unpadded, so by name a later message of the same second can
            // sort first; the sink's counter `Q{count}` orders them.
            paths.sort_by_key(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let count = name
                    .split_once('Q')
                    .and_then(|(_, rest)| rest.split('.').next())
                    .and_then(|n| n.parse::<u64>().ok());
                (count, name)
            });
            for path in paths {
                let raw = std::fs::read_to_string(&path).unwrap_or_default();
                out.push(parse(&raw));
            }
        }
        out
    }

    /// Waits (with a deadline) for the `n`th message (1-based) to `to` whose subject contains `subject`.
    async fn wait_for_nth(&self, to: &str, subject: &str, n: usize) -> Received {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found: Vec<Received> = self
                .messages()
                .into_iter()
                .filter(|m| m.to.eq_ignore_ascii_case(to) && m.subject.contains(subject))
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no mail {subject:?} to {to} (#{n}); received: {:?}",
                self.messages().iter().map(|m| (&m.to, &m.subject)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for(&self, to: &str, subject: &str) -> Received {
        self.wait_for_nth(to, subject, 1).await
    }

    fn count_to(&self, to: &str) -> usize {
        self.messages().iter().filter(|m| m.to.eq_ignore_ascii_case(to)).count()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn parse(raw: &str) -> Received {
    let header = |name: &str| {
        raw.lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let body = raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
    Received { to: header("X-RcptTo"), subject: header("Subject"), body }
}

/// An app that sends mail through `sink`.
async fn app_with_mail(sink: &SmtpSink) -> TestApp {
    let url = sink.url();
    TestApp::spawn_with(move |c| {
        c.mail.smtp_url = Some(Secret::new(url));
        c.mail.poll = Duration::from_millis(200);
    })
    .await
}

async fn balance(app: &TestApp, email: &str) -> i64 {
    let user = accounts::find_by_email(&app.pool, email).await.expect("db").expect("user");
    ledger::balance(&app.pool, user.id).await.expect("balance").available
}

/// Makes every token of `user_id` expired (as if its lifetime had passed).
async fn expire_tokens(app: &TestApp, email: &str) {
    sqlx::query(
        "UPDATE account_token SET created_at = now() - interval '3 days', expires_at = now() - interval '1 second'
         WHERE user_id = (SELECT user_id FROM app_user WHERE lower(email) = lower($1))",
    )
    .bind(email)
    .execute(&app.pool)
    .await
    .expect("expire");
}

/// The confirmation form a mailed verification or email-change link opens (the GET changes
/// nothing: link scanners fetch links).
async fn confirm_form(browser: &Browser, link: &str) -> Form {
    let (status, page) = browser.page(link).await;
    assert_eq!(status, StatusCode::OK, "{link}");
    page.assert_well_formed("confirm link");
    Form::on(&page, link)
}

/// Opens a mailed verification or email-change link as a person does: loads it and presses the
/// button.
async fn open_link(browser: &Browser, link: &str) -> reqwest::Response {
    confirm_form(browser, link).await.submit(browser, &[]).await
}

async fn assert_refused(browser: &Browser, path: &str, status: StatusCode, words: &str) {
    let response = browser.get(path).await;
    assert_eq!(response.status(), status, "{path}");
    let page = Page::from_response(response).await;
    page.assert_well_formed("refused link");
    let message = page.text("[data-testid=link-refused]").unwrap_or_default();
    assert!(message.contains(words), "{path}: {message}");
}

#[tokio::test]
async fn sign_up_mails_a_verification_link_that_works_once_and_grants_the_credits() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink).await;
    let (_, signup) = app.page("/signup").await;
    assert!(signup.text("main").is_some_and(|t| t.contains("once you confirm your email address")));
    let response = app.browser.submit_sign_up("Ann@Example.com", PASSWORD).await;
    assert_eq!(location(&response), "/signup/check-email");
    assert_eq!(balance(&app, "ann@example.com").await, 0, "no credits before verification where mail is configured");

    // Logged in before verifying: a banner, and a way to get the link again.
    assert_eq!(app.browser.log_in("ann@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let (_, home) = app.page("/").await;
    assert_eq!(home.count("[data-testid=verify-banner]"), 1);
    home.assert_well_formed("home with the banner");
    let first = sink.wait_for("Ann@Example.com", "Confirm your email address").await;
    let resend = app.browser.submit("/account", "/account/resend-verification", &[]).await;
    assert_eq!(location(&resend), "/account?notice=verification-sent");
    let second = sink.wait_for_nth("Ann@Example.com", "Confirm your email address", 2).await;
    assert_ne!(first.link("/verify-email/"), second.link("/verify-email/"));
    assert!(first.body.contains("Content-Type: text/plain") && first.body.contains("Content-Type: text/html"));

    // The link, opened in another browser: verified, signed in there, credits granted.
    let phone = app.browser();
    let link = second.link("/verify-email/");
    let form = confirm_form(&phone, &link).await;
    // Loading the page used nothing: it can be loaded again (here by a scanner that keeps it).
    let scanner = app.browser();
    let stale = confirm_form(&scanner, &link).await;
    let response = form.submit(&phone, &[]).await;
    assert_eq!(
        (response.status(), location(&response)),
        (StatusCode::SEE_OTHER, "/account?notice=email-verified".into())
    );
    let (_, account) = phone.page("/account?notice=email-verified").await;
    assert_eq!(account.text("[data-testid=balance]").as_deref(), Some("100"));
    assert_eq!(account.count("[data-testid=verify-banner]"), 0);
    let user = accounts::find_by_email(&app.pool, "ann@example.com").await.expect("db").expect("user");
    let history = ledger::history(&app.pool, user.id, 10, 0).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].memo, accounts::SIGNUP_MEMO_VERIFIED, "the ledger line says why");

    // Used (pressing the button again is refused too), and the older link was retired with it;
    // an unknown one is refused too.
    let again = stale.submit(&scanner, &[]).await;
    assert_eq!(again.status(), StatusCode::GONE);
    assert_refused(&app.browser(), &link, StatusCode::GONE, "already used").await;
    assert_refused(&app.browser(), &first.link("/verify-email/"), StatusCode::GONE, "already used").await;
    assert_refused(&app.browser(), "/verify-email/nonsense", StatusCode::NOT_FOUND, "not valid").await;
    assert_eq!(balance(&app, "ann@example.com").await, 100, "granted once");
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_expired_verification_link_is_refused_and_a_taken_address_gets_a_note() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink).await;
    app.browser.submit_sign_up("bo@example.com", PASSWORD).await;
    let mail = sink.wait_for("bo@example.com", "Confirm your email address").await;
    expire_tokens(&app, "bo@example.com").await;
    assert_refused(&app.browser, &mail.link("/verify-email/"), StatusCode::GONE, "expired").await;
    assert_eq!(balance(&app, "bo@example.com").await, 0);

    // Signing up again with the address: the same answer, no new account, a note to the owner.
    let again = app.browser().submit_sign_up("BO@example.com", "some other password").await;
    assert_eq!((again.status(), location(&again)), (StatusCode::SEE_OTHER, "/signup/check-email".into()));
    let note = sink.wait_for("bo@example.com", "Someone tried to sign up").await;
    assert!(note.body.contains("/forgot-password"));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM app_user").fetch_one(&app.pool).await.expect("count");
    assert_eq!(users, 1);
}

#[tokio::test]
async fn the_free_credits_are_granted_once_per_normalized_address_even_after_deletion() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink).await;
    let verify = |email: &'static str, n: usize| {
        let (app, sink) = (&app, &sink);
        async move {
            let mail = sink.wait_for_nth(email, "Confirm your email address", n).await;
            let response = open_link(&app.browser(), &mail.link("/verify-email/")).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{email} verified");
        }
    };
    app.browser().submit_sign_up("ann.lee@gmail.com", PASSWORD).await;
    verify("ann.lee@gmail.com", 1).await;
    assert_eq!(balance(&app, "ann.lee@gmail.com").await, 100);

    // Gmail ignores dots and +tags: the same mailbox, a second account, no second grant.
    app.browser().submit_sign_up("AnnLee+again@gmail.com", PASSWORD).await;
    verify("AnnLee+again@gmail.com", 1).await;
    assert_eq!(balance(&app, "annlee+again@gmail.com").await, 0);

    // Deleted and signed up again with the very address: still no second grant.
    let browser = app.browser();
    assert_eq!(browser.log_in("ann.lee@gmail.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let response =
        browser.submit("/account/delete", "/account/delete", &[("password", PASSWORD), ("confirm", "on")]).await;
    assert_eq!(location(&response), "/login?notice=account-deleted");
    app.browser().submit_sign_up("ann.lee@gmail.com", PASSWORD).await;
    verify("ann.lee@gmail.com", 2).await;
    assert_eq!(balance(&app, "ann.lee@gmail.com").await, 0);

    // A different address still gets its own.
    app.browser().submit_sign_up("other@example.com", PASSWORD).await;
    verify("other@example.com", 1).await;
    assert_eq!(balance(&app, "other@example.com").await, 100);
    let grants: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_transfer WHERE kind = 'signup_bonus'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(grants, 2);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_password_reset_link_works_once_ends_every_session_and_can_revoke_keys() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink).await;
    let user = app.create_user("cy@example.com", 100).await;
    let laptop = app.browser();
    laptop.sign_in(&user).await;
    accounts::api_keys::create(&app.pool, user.id, "script").await.expect("key");

    let (status, login) = app.page("/login").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(login.attr("[data-testid=forgot-link]", "href").as_deref(), Some("/forgot-password"));
    let (_, forgot) = app.page("/forgot-password").await;
    forgot.assert_well_formed("forgot password");
    // The same answer for an address with no account (and no mail for it).
    let known = app.browser.submit("/forgot-password", "/forgot-password", &[("email", "CY@example.com")]).await;
    let unknown = app.browser.submit("/forgot-password", "/forgot-password", &[("email", "nobody@example.com")]).await;
    assert_eq!((known.status(), unknown.status()), (StatusCode::OK, StatusCode::OK));
    let (known, unknown) = (Page::from_response(known).await, Page::from_response(unknown).await);
    assert_eq!(known.text("main"), unknown.text("main"));
    let bad = app.browser.submit("/forgot-password", "/forgot-password", &[("email", "not an address")]).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mail = sink.wait_for("cy@example.com", "Reset your Faceoff password").await;
    let link = mail.link("/reset-password/");
    let (status, form) = app.page(&link).await;
    assert_eq!(status, StatusCode::OK);
    form.assert_well_formed("reset form");
    assert_eq!(form.count("input[name=revoke_keys]"), 1, "offers to revoke the API key");
    let short = app.browser.submit(&link, &link, &[("password", "short")]).await;
    assert_eq!(short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let done = app.browser.submit(&link, &link, &[("password", "a brand new password"), ("revoke_keys", "on")]).await;
    assert_eq!(location(&done), "/login?notice=password-reset");

    assert!(!laptop.is_signed_in().await, "every session ended");
    let active = accounts::api_keys::active_count(&app.pool, user.id).await.expect("keys");
    assert_eq!(active, 0, "the key was revoked as asked");
    assert_eq!(app.browser().log_in("cy@example.com", TEST_PASSWORD).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.browser().log_in("cy@example.com", "a brand new password").await.status(), StatusCode::SEE_OTHER);

    // Used: refused, by GET and by POST.
    assert_refused(&app.browser(), &link, StatusCode::GONE, "already used").await;
    // Expired: refused too.
    app.browser.submit("/forgot-password", "/forgot-password", &[("email", "cy@example.com")]).await;
    let second = sink.wait_for_nth("cy@example.com", "Reset your Faceoff password", 2).await;
    expire_tokens(&app, "cy@example.com").await;
    assert_refused(&app.browser(), &second.link("/reset-password/"), StatusCode::GONE, "expired").await;
    // Rate-limited: at most 3 reset links per account per quarter hour (the 4th ask sends nothing,
    // and the page says the same).
    for _ in 0..4 {
        let page = app.browser.submit("/forgot-password", "/forgot-password", &[("email", "cy@example.com")]).await;
        assert_eq!(page.status(), StatusCode::OK);
    }
    let recent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM account_token WHERE purpose = 'reset_password' AND created_at > now() - interval '15 minutes'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(recent, 3);
    let unknown: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE to_address = 'nobody@example.com'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(unknown, 0);
}

#[tokio::test]
async fn an_email_change_is_confirmed_at_the_new_address_and_told_to_the_old_one() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink).await;
    let user = app.signed_in_user(100).await;
    let (status, page) = app.page("/account/email").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("change email");
    let wrong = app
        .browser
        .submit("/account/email", "/account/email", &[("email", "new@example.com"), ("password", "nope nope")])
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let ok = app
        .browser
        .submit("/account/email", "/account/email", &[("email", "new@example.com"), ("password", TEST_PASSWORD)])
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(Page::from_response(ok).await.text("[data-testid=email-change-sent]").is_some());
    let (_, account) = app.page("/account").await;
    assert!(
        account.text("[data-testid=account-email]").is_some_and(|e| e.contains(&user.email)),
        "unchanged until confirmed"
    );

    let mail = sink.wait_for("new@example.com", "Confirm your new email address").await;
    let link = mail.link("/verify-email/");
    let response = open_link(&app.browser, &link).await;
    assert_eq!(location(&response), "/account?notice=email-changed");
    let (_, account) = app.page("/account").await;
    assert!(account.text("[data-testid=account-email]").is_some_and(|e| e.contains("new@example.com")));
    let notice = sink.wait_for(&user.email, "Your Faceoff email address was changed").await;
    assert!(notice.body.contains("new@example.com"));
    assert_eq!(app.browser().log_in("new@example.com", TEST_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.browser().log_in(&user.email, TEST_PASSWORD).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_refused(&app.browser, &link, StatusCode::GONE, "already used").await;

    // An expired change link is refused and changes nothing.
    app.browser
        .submit("/account/email", "/account/email", &[("email", "third@example.com"), ("password", TEST_PASSWORD)])
        .await;
    let mail = sink.wait_for("third@example.com", "Confirm your new email address").await;
    expire_tokens(&app, "new@example.com").await;
    assert_refused(&app.browser, &mail.link("/verify-email/"), StatusCode::GONE, "expired").await;
    assert!(accounts::find_by_email(&app.pool, "new@example.com").await.expect("db").is_some());
}

/// Every (table, column) with a foreign key to `app_user`.
async fn user_references(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT cl.relname::text, att.attname::text
         FROM pg_constraint c
         JOIN pg_class cl ON cl.oid = c.conrelid
         JOIN pg_attribute att ON att.attrelid = c.conrelid AND att.attnum = ANY (c.conkey)
         WHERE c.contype = 'f' AND c.confrelid = 'app_user'::regclass",
    )
    .fetch_all(pool)
    .await
    .expect("references")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() { files_under(&path, out) } else { out.push(path) }
    }
}

#[tokio::test]
async fn deleting_an_account_leaves_no_content_behind_and_the_books_balance() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink).await;
    let workers = CancellationToken::new();
    jobs::spawn_workers(
        app.pool.clone(),
        app.state.store.clone(),
        app.state.providers.clone(),
        jobs::WorkerOptions {
            workers: 2,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(100),
            per_provider: 24,
            max_transient: 3,
            running_limits: faceoff::jobs::RunningLimits::NONE,
        },
        workers.clone(),
    );
    let user = app.signed_in_user(200).await;
    let bystander = app.create_user("stays@example.com", 100).await;
    accounts::api_keys::create(&app.pool, user.id, "script").await.expect("key");
    sqlx::query(
        "INSERT INTO webhook_endpoint (endpoint_id, user_id, url, events, secret)
         VALUES (gen_random_uuid(), $1, 'https://hooks.example.com/x', ARRAY['run.completed'], 'whsec_x')",
    )
    .bind(user.id)
    .execute(&app.pool)
    .await
    .expect("endpoint");
    // A run with a reference image and two generated images.
    let (_, studio) = app.page("/studio?models=flux-2,flux-ultra-1-1").await;
    let csrf = studio.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf");
    let key = studio.attr("input[name=idempotency_key]", "value").expect("key");
    let form = multipart::Form::new()
        .text("csrf_token", csrf)
        .text("idempotency_key", key)
        .text("prompt", "a secret prompt about my cat")
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("models", "flux-2")
        .text("models", "flux-ultra-1-1");
    let response = app.browser.post_multipart("/runs", form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "run accepted");
    let run_id: Uuid = location(&response).trim_start_matches("/runs/").parse().expect("run id");
    crate::helpers::settled_within(&app.pool, run_id, Duration::from_secs(60)).await;
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM media_object WHERE owner_user_id = $1")
        .bind(user.id)
        .fetch_all(&app.pool)
        .await
        .expect("keys");
    assert!(keys.len() >= 2, "{keys:?}");
    let media_dir = PathBuf::from(app.state.config.storage_url.trim_start_matches("file://"));
    let mut stored = Vec::new();
    files_under(&media_dir, &mut stored);
    assert!(keys.iter().all(|k| stored.iter().any(|p| p.ends_with(k))), "stored: {stored:?}");

    // The export has the profile, the run and the credit history.
    let export = app.get("/account/export").await;
    assert_eq!(export.status(), StatusCode::OK);
    assert!(export.headers()["content-disposition"].to_str().unwrap_or("").contains("attachment"));
    let document: serde_json::Value = export.json().await.expect("json");
    assert_eq!(document["profile"]["email"], user.email.as_str());
    assert_eq!(document["runs"][0]["prompt"], "a secret prompt about my cat");
    assert!(document["runs"][0]["jobs"][0]["image"].as_str().is_some_and(|u| u.contains("/media/")));
    assert!(document["credit_history"].as_array().is_some_and(|h| h.len() >= 3), "{}", document["credit_history"]);

    // A pack bought in the sandbox: 200 credits paid for.
    let checkout = app.browser.submit("/credits", "/credits/checkout", &[("pack", "starter-200")]).await;
    let to = location(&checkout);
    let paid = app.browser.submit(&to, &format!("{to}/pay"), &[]).await;
    assert_eq!(paid.status(), StatusCode::SEE_OTHER, "paid");

    // The page states what will be lost, bought credits included; the password is asked.
    let (status, page) = app.page("/account/delete").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("delete account");
    assert!(page.text("[data-testid=delete-credits]").is_some_and(|t| t.contains("unspent")));
    assert_eq!(page.text("[data-testid=delete-purchased]").as_deref(), Some("200"));
    let wrong =
        app.browser.submit("/account/delete", "/account/delete", &[("password", "wrong"), ("confirm", "on")]).await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let phone = app.browser();
    phone.sign_in(&user).await;
    let done = app
        .browser
        .submit("/account/delete", "/account/delete", &[("password", TEST_PASSWORD), ("confirm", "on")])
        .await;
    assert_eq!(location(&done), "/login?notice=account-deleted");
    assert!(!app.browser.is_signed_in().await && !phone.is_signed_in().await, "every session ended");
    sink.wait_for(&user.email, "Your Faceoff account was deleted").await;

    // No row of the user's remains in any table that references users, except the books: the
    // wallet and the payments, owned by the scrubbed, pseudonymous account row.
    for (table, column) in user_references(&app.pool).await {
        let sql = format!("SELECT count(*) FROM \"{table}\" WHERE \"{column}\" = $1");
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(user.id).fetch_one(&app.pool).await.expect("count");
        let books = matches!(table.as_str(), "ledger_account" | "payment");
        assert!(count == 0 || books, "{table}.{column} still has {count} row(s) of the deleted user");
    }
    let remaining: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM generation_run WHERE user_id = $1)
              + (SELECT count(*) FROM generation_job WHERE run_id = $2)
              + (SELECT count(*) FROM session WHERE data ->> 'user_id' = $1::text)
              + (SELECT count(*) FROM mail_outbox WHERE to_address = $3 AND status = 'pending')",
    )
    .bind(user.id)
    .bind(run_id)
    .bind(&user.email)
    .fetch_one(&app.pool)
    .await
    .expect("remaining");
    assert_eq!(remaining, 0);
    let (email, hash): (String, String) =
        sqlx::query_as("SELECT email, password_hash FROM app_user WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(&app.pool)
            .await
            .expect("pseudonym");
    assert!(email.ends_with("@deleted.invalid") && !email.contains(&user.email) && hash == "!", "{email}");
    let mut stored = Vec::new();
    files_under(&media_dir, &mut stored);
    assert!(keys.iter().all(|k| !stored.iter().any(|p| p.ends_with(k))), "objects left: {stored:?}");
    assert_eq!(app.browser().log_in(&user.email, TEST_PASSWORD).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(accounts::find_by_email(&app.pool, &bystander.email).await.expect("db").is_some());
    app.assert_invariants().await;
    workers.cancel();
}

#[tokio::test]
async fn several_senders_deliver_each_message_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink).await;
    // Queue 30 messages in one transaction, then let three more senders race the app's own.
    let mut tx = faceoff::db::begin(&app.pool).await.expect("begin");
    for n in 0..30 {
        let mail = faceoff::mail::Mail {
            kind: "test",
            to: format!("many{n}@example.com"),
            subject: format!("Message {n}"),
            paragraphs: vec!["Hello.".into()],
            action: None,
            footer: "A test.".into(),
        };
        faceoff::mail::enqueue(&mut tx, None, &mail).await.expect("enqueue");
    }
    let senders: Vec<_> = (0..3)
        .map(|_| {
            faceoff::mail::Sender::new(app.pool.clone(), &app.state.config.mail, &app.state.config.data_dir)
                .expect("sender")
        })
        .collect();
    tx.commit().await.expect("commit");
    let now = time::OffsetDateTime::now_utc();
    let runs = senders.iter().map(|s| s.run_due(now));
    futures::future::join_all(runs).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.messages().len() < 30 {
        assert!(Instant::now() < deadline, "only {} of 30 arrived", sink.messages().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..30 {
        assert_eq!(sink.count_to(&format!("many{n}@example.com")), 1, "message {n} once");
    }
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE status = 'sent' AND text_body = ''")
        .fetch_one(&app.pool)
        .await
        .expect("sent");
    assert_eq!(sent, 30, "sent, and the bodies (with their links) blanked");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_with_backoff() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let app = TestApp::spawn_with(move |c| {
        c.mail.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{port}")));
        c.mail.poll = Duration::from_secs(3600);
    })
    .await;
    let mut tx = faceoff::db::begin(&app.pool).await.expect("begin");
    let mail = faceoff::mail::Mail {
        kind: "test",
        to: "late@example.com".into(),
        subject: "Later".into(),
        paragraphs: vec!["Hello.".into()],
        action: None,
        footer: "A test.".into(),
    };
    let id = faceoff::mail::enqueue(&mut tx, None, &mail).await.expect("enqueue");
    tx.commit().await.expect("commit");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (attempts, due, error): (i32, bool, Option<String>) = sqlx::query_as(
            "SELECT attempts, next_attempt_at > now() + interval '20 seconds', last_error FROM mail_outbox WHERE mail_id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("row");
        if attempts == 1 && error.is_some() {
            assert!(due, "the retry waits");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_smtp_mail_is_written_as_eml_files_and_the_links_work() {
    let app = TestApp::spawn().await;
    app.browser.submit_sign_up("offline@example.com", PASSWORD).await;
    assert_eq!(balance(&app, "offline@example.com").await, 100, "granted at sign-up without mail, as before");
    let outbox = app.state.config.data_dir.join("outbox");
    let deadline = Instant::now() + Duration::from_secs(30);
    let raw = loop {
        let mut files = Vec::new();
        files_under(&outbox, &mut files);
        if let Some(file) = files.iter().find(|p| p.extension().is_some_and(|e| e == "eml")) {
            break std::fs::read_to_string(file).expect("eml");
        }
        assert!(Instant::now() < deadline, "no .eml in {}", outbox.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mail = parse(&format!("X-RcptTo: offline@example.com\n{raw}"));
    assert!(mail.body.contains("To: offline@example.com"));
    let response = open_link(&app.browser, &mail.link("/verify-email/")).await;
    assert_eq!(location(&response), "/account?notice=email-verified");
    let user = accounts::find_by_email(&app.pool, "offline@example.com").await.expect("db").expect("user");
    assert!(user.email_verified);
    let history = ledger::history(&app.pool, user.id, 10, 0).await.expect("history");
    assert_eq!((history.len(), history[0].memo.as_str()), (1, accounts::SIGNUP_MEMO));
}
