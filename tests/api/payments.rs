//! Top-ups: credit packs on /credits, checkout through the sandbox and (mocked) Stripe, the
//! signed webhook, exactly-once crediting under redelivery and races, and the credit history.

use faceoff::{
    config::Secret,
    ledger,
    payments::webhook::{TOLERANCE_SECS, sign},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::{Form, Page, TestApp, location, new_client};

const SECRET: &str = "whsec_test_secret";

async fn header_balance(app: &TestApp) -> i64 {
    let (status, page) = app.page("/credits").await;
    assert_eq!(status, StatusCode::OK);
    page.text("[data-testid=balance]").and_then(|t| t.parse().ok()).expect("balance in the header")
}

async fn balance(app: &TestApp, user_id: Uuid) -> i64 {
    ledger::balance(&app.pool, user_id).await.expect("balance").available
}

async fn topup_count(app: &TestApp, user_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM ledger_transfer t JOIN ledger_account a ON a.account_id = t.credit_account_id
         WHERE t.kind = 'topup' AND a.user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&app.pool)
    .await
    .expect("count")
}

async fn payment_status(app: &TestApp, payment_id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM payment WHERE payment_id = $1")
        .bind(payment_id)
        .fetch_one(&app.pool)
        .await
        .expect("payment")
}

async fn session_of(app: &TestApp, payment_id: Uuid) -> String {
    sqlx::query_scalar("SELECT checkout_session_id FROM payment WHERE payment_id = $1")
        .bind(payment_id)
        .fetch_one(&app.pool)
        .await
        .expect("session id")
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stripe_event").fetch_one(&app.pool).await.expect("count")
}

/// Starts a checkout for `pack` on /credits; returns the payment id and the redirect target.
async fn start_checkout(app: &TestApp, pack: &str) -> (Uuid, String) {
    let response = app.browser.submit("/credits", "/credits/checkout", &[("pack", pack)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "checkout redirects to the provider");
    let to = location(&response);
    let payment_id: Uuid = sqlx::query_scalar("SELECT payment_id FROM payment ORDER BY created_at DESC LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("a payment was recorded");
    (payment_id, to)
}

/// The Checkout Session Stripe made for a payment (of the standard pack): `.json()` is the object
/// as Stripe sends it, in webhook events and in answers to a session look-up.
struct Checkout<'a> {
    /// The Checkout Session's id.
    session: &'a str,
    payment: Uuid,
    user: Uuid,
    /// Whether Stripe reports it paid (`payment_status`).
    paid: bool,
}

impl Checkout<'_> {
    fn json(&self) -> Value {
        json!({
            "id": self.session,
            "object": "checkout.session",
            "mode": "payment",
            "status": "complete",
            "payment_status": if self.paid { "paid" } else { "unpaid" },
            "client_reference_id": self.payment.to_string(),
            "amount_total": 1000,
            "currency": "usd",
            "metadata": {"payment_id": self.payment.to_string(), "user_id": self.user.to_string(), "pack": "standard-500"},
            "url": null,
        })
    }
}

fn event(event_id: &str, kind: &str, object: Value) -> Vec<u8> {
    json!({"id": event_id, "object": "event", "type": kind, "created": 1_700_000_000, "data": {"object": object}})
        .to_string()
        .into_bytes()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn post_webhook(app: &TestApp, body: &[u8], signature: &str) -> reqwest::Response {
    new_client()
        .0
        .post(app.url("/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("webhook POST")
}

async fn with_secret() -> TestApp {
    TestApp::spawn_with(|c| c.stripe_webhook_secret = Some(Secret::new(SECRET))).await
}

#[tokio::test]
async fn buying_a_pack_in_the_sandbox_credits_it_once() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;

    let (status, page) = app.page("/credits").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("/credits");
    assert_eq!(page.text("[data-testid=balance]").as_deref(), Some("100"));
    assert_eq!(page.text("[data-testid=available]").as_deref(), Some("100"));
    assert_eq!(page.attrs(".pack-card", "data-pack"), ["starter-200", "standard-500", "pro-1200"]);
    let standard = page.text("[data-pack=standard-500]").expect("standard pack");
    assert!(standard.contains("500 credits") && standard.contains("$10.00") && standard.contains("2¢ per credit"));
    assert!(page.text("[data-pack=pro-1200]").is_some_and(|t| t.contains("1.67¢ per credit")));
    assert!(page.text("[data-testid=test-mode]").is_some(), "the sandbox is marked as test mode");
    assert_eq!(page.count("form[action=\"/credits/checkout\"] button[type=submit]"), 3);
    assert_eq!(page.texts(".history-label"), ["Sign-up bonus"]);

    // Buy: the checkout sends us to the sandbox's page.
    let (payment_id, to) = start_checkout(&app, "standard-500").await;
    assert_eq!(to, format!("/credits/checkout/sandbox/{payment_id}"));
    assert_eq!(payment_status(&app, payment_id).await, "pending");
    let (status, page) = app.page(&to).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("sandbox checkout");
    assert!(page.text("[data-testid=test-mode]").is_some_and(|t| t.contains("Test mode")));
    assert_eq!(page.text("[data-testid=credits]").as_deref(), Some("500"));
    let pay = Form::on(&page, &format!("{to}/pay"));

    // Pay.
    let response = pay.submit(&app.browser, &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/credits/payments/{payment_id}"));
    let (status, page) = app.page(&location(&response)).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("payment page");
    assert_eq!(page.text("[data-testid=payment-status]").as_deref(), Some("Paid"));
    assert_eq!(page.text("h1").as_deref(), Some("500 credits added"));

    assert_eq!(header_balance(&app).await, 600);
    let (_, page) = app.page("/credits").await;
    page.assert_well_formed("/credits after the top-up");
    assert_eq!(page.texts(".history-label"), ["Top-up", "Sign-up bonus"]);
    assert_eq!(page.attrs(".history-link", "href"), [format!("/credits/payments/{payment_id}")]);
    assert_eq!(page.text("tr[data-status=paid] .badge").as_deref(), Some("Paid"));
    assert_eq!(topup_count(&app, user.id).await, 1);

    // Stripe-style redelivery of the sandbox's event (same id), and a second event for the session.
    let secret = app.state.payments.webhook_secret.expose().to_string();
    let session_id = session_of(&app, payment_id).await;
    assert!(session_id.starts_with("cs_sandbox_"));
    let event_id: String =
        sqlx::query_scalar("SELECT event_id FROM stripe_event").fetch_one(&app.pool).await.expect("event");
    for id in [event_id.as_str(), "evt_second_delivery"] {
        let body = event(
            id,
            "checkout.session.completed",
            Checkout { session: &session_id, payment: payment_id, user: user.id, paid: true }.json(),
        );
        let response = post_webhook(&app, &body, &sign(&secret, now(), &body)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(header_balance(&app).await, 600);
    assert_eq!(topup_count(&app, user.id).await, 1);

    // Paying again (the sandbox page still open in the tab) is a no-op that lands on the payment
    // page.
    let response = pay.submit(&app.browser, &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(balance(&app, user.id).await, 600);
    app.assert_invariants().await;
}

#[tokio::test]
async fn canceling_the_sandbox_checkout_changes_no_balance() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;
    let (payment_id, to) = start_checkout(&app, "starter-200").await;
    let (_, sandbox) = app.page(&to).await;
    let (cancel, pay) = (Form::on(&sandbox, &format!("{to}/cancel")), Form::on(&sandbox, &format!("{to}/pay")));
    let response = cancel.submit(&app.browser, &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(payment_status(&app, payment_id).await, "canceled");
    let (_, page) = app.page(&location(&response)).await;
    page.assert_well_formed("canceled payment");
    assert_eq!(page.text("[data-testid=payment-status]").as_deref(), Some("Canceled"));

    // A canceled checkout cannot be paid any more (from the page still open), and the sandbox
    // page sends you to its status.
    let response = pay.submit(&app.browser, &[]).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let response = app.get(&to).await;
    assert_eq!(location(&response), format!("/credits/payments/{payment_id}"));

    assert_eq!(header_balance(&app).await, 100);
    let (_, page) = app.page("/credits").await;
    assert_eq!(page.text("tr[data-status=canceled] .badge").as_deref(), Some("Canceled"));
    assert_eq!(page.texts(".history-label"), ["Sign-up bonus"]);
    assert_eq!(topup_count(&app, user.id).await, 0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn checkout_validates_the_pack_and_the_csrf_token() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;

    let response = app.browser.submit("/credits", "/credits/checkout", &[("pack", "mega-9000")]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = Page::from_response(response).await;
    page.assert_well_formed("checkout with an unknown pack");
    assert!(page.text("#pack-error").is_some_and(|t| t.contains("mega-9000")), "the error names the pack");

    let response =
        app.browser.post_raw("/credits/checkout", &[("pack", "standard-500"), ("csrf_token", "forged")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = app.browser.post_raw("/credits/checkout", &[("pack", "standard-500")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payment").fetch_one(&app.pool).await.expect("count");
    assert_eq!(payments, 0, "bad input records nothing");
    assert_eq!(balance(&app, user.id).await, 100);
}

#[tokio::test]
async fn credits_pages_belong_to_their_owner() {
    let app = TestApp::spawn().await;
    let anonymous = app.browser();
    for path in ["/credits", "/credits/history.csv"] {
        let response = anonymous.get(path).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&response).starts_with("/login?next="), "{path}");
    }

    let alice = app.signed_in_user(100).await;
    let (payment_id, to) = start_checkout(&app, "pro-1200").await;
    let response = anonymous.get(&to).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "anonymous visitors are sent to log in");

    // Bob may not see or pay Alice's checkout.
    let bob = app.create_user("bob@example.com", 100).await;
    let bobs = app.browser();
    bobs.sign_in(&bob).await;
    for path in [to.clone(), format!("/credits/payments/{payment_id}"), "/credits/payments/not-a-uuid".into()] {
        let (status, page) = bobs.page(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        page.assert_well_formed("404");
    }
    // Bob crafts the pay and cancel forms of Alice's checkout, with a valid token of his own.
    let token = bobs.token("/credits", None).await;
    let response = bobs.post_raw(&format!("{to}/pay"), &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = bobs.post_raw(&format!("{to}/cancel"), &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(payment_status(&app, payment_id).await, "pending");
    assert_eq!((balance(&app, alice.id).await, balance(&app, bob.id).await), (100, 100));
    let (_, page) = bobs.page("/credits").await;
    assert_eq!(page.count(".payments-table tbody tr"), 0, "Bob does not see Alice's payments");
}

#[tokio::test]
async fn history_is_paginated_and_downloadable_as_csv() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;
    // 24 adjustments, one with a memo that needs CSV quoting: 25 lines with the sign-up bonus.
    let mut tx = faceoff::db::begin(&app.pool).await.expect("begin");
    let wallet = ledger::wallet(&mut *tx, user.id).await.expect("wallet");
    let adjustments = ledger::system_account(&mut *tx, ledger::System::Adjustments).await.expect("system");
    for i in 1..=24 {
        let key = format!("test-adjustment-{i}");
        let memo = if i == 24 { "Goodwill, for \"slow\" renders".to_string() } else { format!("Adjustment {i}") };
        ledger::transfer(
            &mut tx,
            ledger::NewTransfer {
                key: &key,
                debit: adjustments,
                credit: wallet,
                amount: i,
                kind: ledger::Kind::Adjustment,
                memo: &memo,
                refs: ledger::Refs::default(),
            },
        )
        .await
        .expect("transfer");
    }
    tx.commit().await.expect("commit");
    let total = 100 + (1..=24).sum::<i64>();

    let (_, first) = app.page("/credits").await;
    first.assert_well_formed("history page 1");
    assert_eq!(first.count(".history-line"), 20);
    assert_eq!(first.attr("a[rel=next]", "href").as_deref(), Some("/credits?page=2#history"));
    assert_eq!(first.count("a[rel=prev]"), 0);
    let amounts = first.texts(".history-line td.num:nth-child(4)");
    assert_eq!(amounts.first().map(String::as_str), Some(total.to_string().as_str()), "newest first");

    let (_, second) = app.page("/credits?page=2").await;
    second.assert_well_formed("history page 2");
    assert_eq!(second.count(".history-line"), 5);
    assert_eq!(second.texts(".history-label").last().map(String::as_str), Some("Sign-up bonus"));
    assert_eq!(second.count("a[rel=next]"), 0);
    assert!(second.text(".pagination").is_some_and(|t| t.contains("Page 2 of 2")));
    // Out-of-range and garbage page numbers are clamped, never an error.
    let (status, page) = app.page("/credits?page=99").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.count(".history-line"), 5);
    let (status, _) = app.page("/credits?page=abc").await;
    assert_eq!(status, StatusCode::OK);

    let response = app.get("/credits/history.csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap_or("").starts_with("text/csv"));
    let disposition = response.headers()["content-disposition"].to_str().unwrap_or("").to_string();
    assert!(disposition.starts_with("attachment; filename=\"faceoff-credits-"), "{disposition}");
    let csv = response.text().await.expect("csv");
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 26, "a header and every line");
    assert_eq!(rows[0], "date,type,description,amount,balance_after,run_id,payment_id");
    let newest = format!(",Adjustment,\"Goodwill, for \"\"slow\"\" renders\",24,{total},,");
    assert!(rows[1].ends_with(&newest), "{}", rows[1]);
    assert!(rows[25].contains(",Sign-up bonus,Sign-up bonus,100,100,,"), "{}", rows[25]);
}

#[tokio::test]
async fn redelivered_and_duplicate_events_credit_exactly_once() {
    let app = with_secret().await;
    let user = app.signed_in_user(100).await;
    let (payment_id, _) = start_checkout(&app, "standard-500").await;
    let session_id = session_of(&app, payment_id).await;
    let object = Checkout { session: &session_id, payment: payment_id, user: user.id, paid: true }.json();
    let completed = event("evt_completed_1", "checkout.session.completed", object.clone());
    let succeeded = event("evt_async_ok_1", "checkout.session.async_payment_succeeded", object);

    // The same event ten times, concurrently, plus a different event for the same session.
    let signature = sign(SECRET, now(), &completed);
    let other_signature = sign(SECRET, now(), &succeeded);
    let mut deliveries: Vec<_> = (0..10).map(|_| post_webhook(&app, &completed, &signature)).collect();
    deliveries.push(post_webhook(&app, &succeeded, &other_signature));
    for response in futures::future::join_all(deliveries).await {
        assert_eq!(response.status(), StatusCode::OK);
    }

    assert_eq!(balance(&app, user.id).await, 600);
    assert_eq!(topup_count(&app, user.id).await, 1);
    assert_eq!(payment_status(&app, payment_id).await, "paid");
    assert_eq!(event_count(&app).await, 2, "each event id is recorded once");
    let key: String = sqlx::query_scalar("SELECT idempotency_key FROM ledger_transfer WHERE kind = 'topup'")
        .fetch_one(&app.pool)
        .await
        .expect("key");
    assert_eq!(key, format!("checkout:{session_id}"));
    app.assert_invariants().await;
}

#[tokio::test]
async fn forged_stale_and_tampered_events_are_rejected() {
    let app = with_secret().await;
    let user = app.signed_in_user(100).await;
    let (payment_id, _) = start_checkout(&app, "standard-500").await;
    let session_id = session_of(&app, payment_id).await;
    let body = event(
        "evt_1",
        "checkout.session.completed",
        Checkout { session: &session_id, payment: payment_id, user: user.id, paid: true }.json(),
    );

    let forged = sign("whsec_attacker", now(), &body);
    let stale = sign(SECRET, now() - TOLERANCE_SECS - 1, &body);
    let mut tampered_body = event(
        "evt_1",
        "checkout.session.completed",
        Checkout { session: &session_id, payment: payment_id, user: user.id, paid: true }.json(),
    );
    let signed_for_original = sign(SECRET, now(), &tampered_body);
    tampered_body = String::from_utf8(tampered_body).expect("utf8").replace("1000", "100").into_bytes();
    let cases: [(&str, &[u8], String); 5] = [
        ("bad signature", &body, forged),
        ("stale timestamp", &body, stale),
        ("tampered body", &tampered_body, signed_for_original),
        ("malformed header", &body, "v1=abc".into()),
        ("not hex", &body, format!("t={},v1=zzzz", now())),
    ];
    for (what, body, signature) in cases {
        let response = post_webhook(&app, body, &signature).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(response.headers()["content-type"].to_str().unwrap_or("").starts_with("application/json"), "{what}");
        let json: Value = response.json().await.expect("json");
        assert_eq!(json["error"]["code"], "invalid_signature", "{what}");
    }
    let response = new_client().0.post(app.url("/webhooks/stripe")).body(body.clone()).send().await.expect("POST");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "no signature header");
    assert_eq!((balance(&app, user.id).await, event_count(&app).await), (100, 0), "nothing changed");
    assert_eq!(payment_status(&app, payment_id).await, "pending");

    // Secret rotation: two v1 signatures, one made with an old secret; the matching one counts.
    let t = now();
    let good = sign(SECRET, t, &body);
    let old = sign("whsec_rotated_out", t, &body);
    let v1 = |h: &str| h.split_once(",v1=").map(|(_, v)| v.to_string()).unwrap_or_default();
    let header = format!("t={t},v1={},v1={}", v1(&old), v1(&good));
    let response = post_webhook(&app, &body, &header).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(balance(&app, user.id).await, 600);
    app.assert_invariants().await;
}

#[tokio::test]
async fn failed_expired_and_unknown_events() {
    let app = with_secret().await;
    let user = app.signed_in_user(100).await;
    let (first, _) = start_checkout(&app, "starter-200").await;
    let (second, _) = start_checkout(&app, "starter-200").await;
    let deliver = |id: &'static str, kind: &'static str, object: Value| {
        let body = event(id, kind, object);
        let signature = sign(SECRET, now(), &body);
        let app = &app;
        async move { post_webhook(app, &body, &signature).await.status() }
    };
    let s1 = session_of(&app, first).await;
    let s2 = session_of(&app, second).await;
    assert_eq!(
        deliver(
            "evt_a",
            "checkout.session.async_payment_failed",
            Checkout { session: &s1, payment: first, user: user.id, paid: false }.json()
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        deliver(
            "evt_b",
            "checkout.session.expired",
            Checkout { session: &s2, payment: second, user: user.id, paid: false }.json()
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(payment_status(&app, first).await, "failed");
    assert_eq!(payment_status(&app, second).await, "failed");
    // An unpaid completion (asynchronous payment still processing) credits nothing.
    let (third, _) = start_checkout(&app, "starter-200").await;
    let s3 = session_of(&app, third).await;
    assert_eq!(
        deliver(
            "evt_c",
            "checkout.session.completed",
            Checkout { session: &s3, payment: third, user: user.id, paid: false }.json()
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(payment_status(&app, third).await, "pending");
    // Unknown event types are acknowledged and ignored.
    assert_eq!(
        deliver("evt_d", "customer.created", json!({"id": "cus_1", "object": "customer"})).await,
        StatusCode::OK
    );
    assert_eq!(balance(&app, user.id).await, 100);

    let (_, page) = app.page(&format!("/credits/payments/{first}")).await;
    page.assert_well_formed("failed payment");
    assert_eq!(page.text("[data-testid=payment-status]").as_deref(), Some("Failed"));
    let (_, page) = app.page("/credits").await;
    assert_eq!(page.count("tr[data-status=failed]"), 2);
    assert_eq!(page.count("tr[data-status=pending]"), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn stripe_checkout_and_the_success_page_racing_the_webhook() {
    let stripe = MockServer::start().await;
    let session_url = "https://checkout.stripe.com/c/pay/cs_test_a1b2c3";
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cs_test_a1b2c3", "object": "checkout.session", "payment_status": "unpaid", "status": "open",
            "url": session_url,
        })))
        .expect(1)
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = TestApp::spawn_with(|c| {
        c.stripe_secret_key = Some(Secret::new("sk_test_123"));
        c.stripe_webhook_secret = Some(Secret::new(SECRET));
        c.stripe_api_url = uri.parse().expect("mock url");
    })
    .await;
    let user = app.signed_in_user(100).await;
    let (_, page) = app.page("/credits").await;
    assert_eq!(page.count("[data-testid=test-mode]"), 0, "live mode is not marked as a test");

    let (payment_id, to) = start_checkout(&app, "standard-500").await;
    assert_eq!(to, session_url, "303 to Stripe's hosted checkout");
    assert_eq!(session_of(&app, payment_id).await, "cs_test_a1b2c3");

    // What we sent Stripe.
    let requests = stripe.received_requests().await.expect("recorded requests");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.headers["authorization"], "Bearer sk_test_123");
    assert_eq!(request.headers["idempotency-key"], format!("checkout-{payment_id}").as_str());
    assert!(request.headers["content-type"].to_str().unwrap_or("").starts_with("application/x-www-form-urlencoded"));
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&request.body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_else(|| panic!("field {k} missing: {form:?}"));
    assert_eq!(field("mode"), "payment");
    assert_eq!(field("client_reference_id"), payment_id.to_string());
    assert_eq!(field("line_items[0][quantity]"), "1");
    assert_eq!(field("line_items[0][price_data][currency]"), "usd");
    assert_eq!(field("line_items[0][price_data][unit_amount]"), "1000");
    assert!(field("line_items[0][price_data][product_data][name]").contains("500 credits"));
    assert_eq!(field("metadata[payment_id]"), payment_id.to_string());
    assert_eq!(field("metadata[user_id]"), user.id.to_string());
    assert_eq!(field("metadata[pack]"), "standard-500");
    assert!(
        field("success_url").ends_with(&format!("/credits/payments/{payment_id}?session_id={{CHECKOUT_SESSION_ID}}"))
    );
    assert!(field("cancel_url").contains(&format!("/credits/payments/{payment_id}")));

    // The buyer pays; Stripe's success page and its webhook arrive at the same time.
    Mock::given(method("GET"))
        .and(path("/v1/checkout/sessions/cs_test_a1b2c3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            Checkout { session: "cs_test_a1b2c3", payment: payment_id, user: user.id, paid: true }.json(),
        ))
        .mount(&stripe)
        .await;
    let body = event(
        "evt_live_1",
        "checkout.session.completed",
        Checkout { session: "cs_test_a1b2c3", payment: payment_id, user: user.id, paid: true }.json(),
    );
    let success = format!("/credits/payments/{payment_id}?session_id=cs_test_a1b2c3");
    let signature = sign(SECRET, now(), &body);
    let (page, hook, hook_again, page_again) = tokio::join!(
        app.page(&success),
        post_webhook(&app, &body, &signature),
        post_webhook(&app, &body, &signature),
        app.page(&success),
    );
    assert_eq!(hook.status(), StatusCode::OK);
    assert_eq!(hook_again.status(), StatusCode::OK);
    for (status, page) in [page, page_again] {
        assert_eq!(status, StatusCode::OK);
        page.assert_well_formed("Stripe success page");
        assert_eq!(page.text("[data-testid=payment-status]").as_deref(), Some("Paid"));
    }
    // Whether the success page had to ask Stripe depends on who won the race; either way the
    // pack is credited once. (`the_success_page_alone_fulfils_the_payment` covers the page path.)

    assert_eq!(header_balance(&app).await, 600);
    assert_eq!(topup_count(&app, user.id).await, 1);
    app.assert_invariants().await;
    // With Stripe configured, the sandbox cannot complete anything.
    // (No page offers that form here: it is crafted, with the browser's valid token.)
    let token = app.browser.token("/credits", None).await;
    let response =
        app.browser.post_raw(&format!("/credits/checkout/sandbox/{payment_id}/pay"), &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_success_page_alone_fulfils_the_payment() {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cs_test_page", "object": "checkout.session", "payment_status": "unpaid", "status": "open",
            "url": "https://checkout.stripe.com/c/pay/cs_test_page",
        })))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = TestApp::spawn_with(|c| {
        c.stripe_secret_key = Some(Secret::new("sk_test_123"));
        c.stripe_webhook_secret = Some(Secret::new(SECRET));
        c.stripe_api_url = uri.parse().expect("mock url");
    })
    .await;
    let user = app.signed_in_user(100).await;
    let (payment_id, _) = start_checkout(&app, "standard-500").await;
    Mock::given(method("GET"))
        .and(path("/v1/checkout/sessions/cs_test_page"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                Checkout { session: "cs_test_page", payment: payment_id, user: user.id, paid: true }.json(),
            ),
        )
        .expect(1)
        .mount(&stripe)
        .await;

    // The buyer comes back before any webhook: the page asks Stripe and fulfils.
    let (status, page) = app.page(&format!("/credits/payments/{payment_id}?session_id=cs_test_page")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.text("[data-testid=payment-status]").as_deref(), Some("Paid"));
    assert_eq!(header_balance(&app).await, 600);

    // The webhook arriving afterwards changes nothing.
    let body = event(
        "evt_page_1",
        "checkout.session.completed",
        Checkout { session: "cs_test_page", payment: payment_id, user: user.id, paid: true }.json(),
    );
    let response = post_webhook(&app, &body, &sign(SECRET, now(), &body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_balance(&app).await, 600);
    assert_eq!(topup_count(&app, user.id).await, 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn stripe_refusing_the_checkout_fails_the_payment_cleanly() {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"message": "Invalid currency", "type": "invalid_request_error"}})),
        )
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = TestApp::spawn_with(|c| {
        c.stripe_secret_key = Some(Secret::new("sk_test_123"));
        c.stripe_api_url = uri.parse().expect("mock url");
    })
    .await;
    let user = app.signed_in_user(100).await;
    let response = app.browser.submit("/credits", "/credits/checkout", &[("pack", "starter-200")]).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let page = Page::from_response(response).await;
    page.assert_well_formed("provider error");
    let status: String = sqlx::query_scalar("SELECT status FROM payment").fetch_one(&app.pool).await.expect("payment");
    assert_eq!(status, "failed");
    assert_eq!(balance(&app, user.id).await, 100);
}

#[tokio::test]
async fn returning_from_stripe_unpaid_or_canceled() {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cs_test_back", "object": "checkout.session", "payment_status": "unpaid",
            "url": "https://checkout.stripe.com/c/pay/cs_test_back",
        })))
        .mount(&stripe)
        .await;
    let uri = stripe.uri();
    let app = TestApp::spawn_with(|c| {
        c.stripe_secret_key = Some(Secret::new("sk_test_123"));
        c.stripe_webhook_secret = Some(Secret::new(SECRET));
        c.stripe_api_url = uri.parse().expect("mock url");
    })
    .await;
    let user = app.signed_in_user(100).await;
    let (payment_id, _) = start_checkout(&app, "standard-500").await;

    // Stripe has not seen the payment yet: the success page says it is waiting.
    Mock::given(method("GET"))
        .and(path("/v1/checkout/sessions/cs_test_back"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            Checkout { session: "cs_test_back", payment: payment_id, user: user.id, paid: false }.json(),
        ))
        .mount(&stripe)
        .await;
    let (status, page) = app.page(&format!("/credits/payments/{payment_id}?session_id=cs_test_back")).await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("pending payment");
    assert_eq!(page.text("[data-testid=payment-status]").as_deref(), Some("Pending"));
    assert!(page.text(".notice").is_some_and(|t| t.contains("waiting for the payment provider")));
    // A session id that is not this payment's is not looked up.
    let (status, _) = app.page(&format!("/credits/payments/{payment_id}?session_id=cs_other")).await;
    assert_eq!(status, StatusCode::OK);
    let lookups =
        stripe.received_requests().await.expect("requests").iter().filter(|r| r.method.as_str() == "GET").count();
    assert_eq!(lookups, 1);

    // The buyer comes back through Stripe's "back" link: a GET changes nothing (any site could
    // send the browser there); the page offers to continue or to cancel.
    let page_path = format!("/credits/payments/{payment_id}?canceled=1");
    let (_, page) = app.page(&page_path).await;
    page.assert_well_formed("a checkout left unpaid");
    assert_eq!(page.text("[data-testid=payment-status]").as_deref(), Some("Pending"));
    assert!(page.count("[data-testid=not-completed]") == 1 && page.count("[data-testid=cancel-payment]") == 1);
    assert_eq!(payment_status(&app, payment_id).await, "pending");
    // Cancelling is a form with a token.
    let cancel = format!("/credits/payments/{payment_id}/cancel");
    assert_eq!(app.browser.post_raw(&cancel, &[]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(payment_status(&app, payment_id).await, "pending");
    let response = app.browser.submit(&page_path, &cancel, &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, page) = app.page(&format!("/credits/payments/{payment_id}")).await;
    assert_eq!(page.text("[data-testid=payment-status]").as_deref(), Some("Canceled"));
    assert_eq!(balance(&app, user.id).await, 100);

    // If Stripe later reports the session paid after all (another tab), the money is credited.
    let body = event(
        "evt_late",
        "checkout.session.completed",
        Checkout { session: "cs_test_back", payment: payment_id, user: user.id, paid: true }.json(),
    );
    let response = post_webhook(&app, &body, &sign(SECRET, now(), &body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(payment_status(&app, payment_id).await, "paid");
    assert_eq!(balance(&app, user.id).await, 600);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_paid_event_without_an_amount_is_not_credited_but_held_for_review() {
    let app = with_secret().await;
    let user = app.signed_in_user(100).await;
    let (payment_id, _) = start_checkout(&app, "standard-500").await;
    let session = session_of(&app, payment_id).await;
    let mut object = Checkout { session: &session, payment: payment_id, user: user.id, paid: true }.json();
    object.as_object_mut().expect("object").remove("amount_total");
    let body = event("evt_no_amount", "checkout.session.completed", object);
    let response = post_webhook(&app, &body, &sign(SECRET, now(), &body)).await;
    assert_eq!(response.status(), StatusCode::OK, "accepted (Stripe must not retry it)");
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["outcome"], "needs_review");
    assert_eq!(balance(&app, user.id).await, 100, "not credited");
    assert_eq!(payment_status(&app, payment_id).await, "pending");
    let (outcome, reason): (String, Option<String>) = sqlx::query_as(
        "SELECT e.outcome, p.review_reason FROM stripe_event e JOIN payment p USING (payment_id) WHERE e.event_id = 'evt_no_amount'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("event");
    assert_eq!(outcome, "needs_review");
    assert!(reason.is_some_and(|r| r.contains("no amount")));
    let (_, page) = app.page(&format!("/credits/payments/{payment_id}")).await;
    assert_eq!(page.count("[data-testid=under-review]"), 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_oversized_webhook_body_is_answered_in_json() {
    let app = with_secret().await;
    let body = vec![b' '; 600 * 1024];
    let response = post_webhook(&app, &body, &sign(SECRET, now(), &body)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.headers()["content-type"].to_str().unwrap_or("").starts_with("application/json"));
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn a_signed_event_with_text_the_database_cannot_store_is_refused() {
    let app = with_secret().await;
    let body = event("evt_\u{0}nul", "checkout.session.completed", json!({"id": "cs_\u{0}"}));
    let response = post_webhook(&app, &body, &sign(SECRET, now(), &body)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "invalid_event");
    assert_eq!(event_count(&app).await, 0);
}
