//! Page-level checks that span modules: where the account page leads, and that the credit
//! history's machine-readable dates are valid HTML (at most three fractional digits).

use faceoff::accounts::admin;
use reqwest::StatusCode;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_account_page_links_to_api_keys_and_to_admin_only_for_admins() {
    let app = TestApp::spawn().await;
    let user = app.signed_in_user(100).await;

    let (status, page) = app.page("/account").await;
    assert_eq!(status, StatusCode::OK);
    page.assert_well_formed("account");
    assert_eq!(page.attr("[data-testid=api-keys-link]", "href").as_deref(), Some("/account/api-keys"));
    assert_eq!(page.count("a[href=\"/admin\"]"), 0, "no admin link for a plain user");

    admin::promote(&app.pool, &user.email).await.expect("promote");
    let (status, page) = app.page("/account").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.attr("[data-testid=admin-link]", "href").as_deref(), Some("/admin"));
    assert_eq!(page.attr("[data-testid=api-keys-link]", "href").as_deref(), Some("/account/api-keys"));
}

#[tokio::test]
async fn credit_history_dates_are_valid_html_datetimes() {
    let app = TestApp::spawn().await;
    app.signed_in_user(100).await;

    let (status, page) = app.page("/credits").await;
    assert_eq!(status, StatusCode::OK);
    let dates = page.attrs(".history-line time", "datetime");
    assert!(!dates.is_empty(), "the sign-up bonus is listed");
    for date in dates {
        // e.g. 2026-11-27T02:10:46Z: whole seconds, UTC.
        assert_eq!(date.len(), 20, "{date}");
        assert!(date.ends_with('Z') && !date.contains('.'), "{date}");
        assert!(time::OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc3339).is_ok(), "{date}");
    }
}
