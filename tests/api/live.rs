//! Live run pages (`GET /runs/{id}/events`) that must not stall: the safety-net reload is not
//! postponed by other runs' notifications, and notifications lost while the listener reconnects
//! are made up by a reload of every stream.

use std::time::Duration;

use faceoff::runs::create::{RunInput, create_run, validate};
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

async fn a_run(app: &TestApp, user: &TestUser) -> Uuid {
    let catalog = app.state.catalog.current();
    let input = RunInput {
        prompt: "a lighthouse at dusk".into(),
        models: vec!["flux-2".into(), "flux-ultra-1-1".into()],
        mode: "2k".into(),
        aspect_ratio: "1:1".into(),
        seed: "7".into(),
        ..RunInput::default()
    };
    let valid = validate(&catalog, &input, None).expect("valid");
    create_run(&app.pool, &app.state.store, &app.state.config.queue, user.id, &valid, &Uuid::new_v4().to_string())
        .await
        .expect("created")
        .run_id
}

/// Ends every job of the run behind the live page's back: no notification is sent.
async fn settle_silently(app: &TestApp, run_id: Uuid) {
    let done = sqlx::query(
        "UPDATE generation_job SET status = 'failed', reason = 'settled silently by the test', charged = 0,
                finished_at = now(), lease_token = NULL, lease_expires_at = NULL
         WHERE run_id = $1",
    )
    .bind(run_id)
    .execute(&app.pool)
    .await
    .expect("settle");
    assert_eq!(done.rows_affected(), 2);
}

/// Reads the event stream until the next complete event; its name.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String, deadline: Instant) -> Option<String> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            match event.lines().find_map(|l| l.strip_prefix("event: ")) {
                Some(name) => return Some(name.to_string()),
                None => continue, // a keep-alive comment
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.ok()?;
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream")?));
    }
}

#[tokio::test]
async fn a_live_page_gets_its_final_event_while_other_runs_keep_notifying() {
    let app = TestApp::spawn_with(|config| config.live_refresh = Duration::from_millis(300)).await;
    let user = app.signed_in_user(100).await;
    let run_id = a_run(&app, &user).await;
    let mut events = app.get(&format!("/runs/{run_id}/events")).await;
    let mut buffer = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    assert_eq!(next_event(&mut events, &mut buffer, deadline).await.as_deref(), Some("run"));

    // A busy server: other runs' jobs change all the time.
    let pool = app.pool.clone();
    let noise = tokio::spawn(async move {
        loop {
            let _ = sqlx::query("SELECT pg_notify('faceoff_job_updated', $1)")
                .bind(Uuid::new_v4().to_string())
                .execute(&pool)
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // This run's notification is lost.
    settle_silently(&app, run_id).await;
    let mut last = None;
    while let Some(name) = next_event(&mut events, &mut buffer, deadline).await {
        last = Some(name.clone());
        if name == "done" {
            break;
        }
    }
    noise.abort();
    assert_eq!(last.as_deref(), Some("done"), "the live page stalled");
}

#[tokio::test]
async fn a_notification_lost_while_the_listener_reconnects_is_made_up() {
    // No periodic reload to fall back on: only the reconnection can save the page.
    let app = TestApp::spawn_with(|config| config.live_refresh = Duration::from_secs(3600)).await;
    let user = app.signed_in_user(100).await;
    let run_id = a_run(&app, &user).await;
    let mut events = app.get(&format!("/runs/{run_id}/events")).await;
    let mut buffer = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    assert_eq!(next_event(&mut events, &mut buffer, deadline).await.as_deref(), Some("run"));

    // Wait until the instance's listener is connected, then: the jobs end while it is not
    // told (as if their notifications were sent while it was down), and it loses its connection.
    let listener_pids = || async {
        sqlx::query_scalar::<_, i32>(
            // The instance's one listening connection (`db::notifications`); its last query is
            // the LISTEN of whichever channel was added last.
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
        .fetch_all(&app.pool)
        .await
        .expect("pg_stat_activity")
    };
    let pids = loop {
        let pids = listener_pids().await;
        if !pids.is_empty() {
            break pids;
        }
        assert!(Instant::now() < deadline, "the run events listener never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    settle_silently(&app, run_id).await;
    for pid in pids {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&app.pool).await.expect("terminate");
    }
    let mut last = None;
    while let Some(name) = next_event(&mut events, &mut buffer, deadline).await {
        last = Some(name.clone());
        if name == "done" {
            break;
        }
    }
    assert_eq!(last.as_deref(), Some("done"), "the page never learned that its run ended");
}

#[tokio::test]
async fn announced_notifications_reach_listeners_after_the_caller_moved_on() {
    use faceoff::db::notifications::{Event, announce, subscribe};
    let app = TestApp::spawn().await;
    let mut subscription = subscribe(&app.pool, "faceoff_test_announced");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Announcements sent before the channel is listened to would be lost: wait for it.
    if !subscription.live {
        match tokio::time::timeout_at(deadline, subscription.events.recv()).await {
            Ok(Ok(Event::Connected)) => {}
            Ok(Ok(Event::Notified(payload))) => panic!("nothing was announced yet: {payload}"),
            Ok(Err(err)) => panic!("subscription: {err}"),
            Err(_) => panic!("the channel was never listened to"),
        }
    }
    // `announce` returns at once (no transaction of the caller's is needed); the pool's announcer
    // sends them, the same payload once or more, every payload at least once.
    for payload in ["first", "second", "second", "third"] {
        announce(&app.pool, "faceoff_test_announced", payload.to_string());
    }
    let mut heard = std::collections::BTreeSet::new();
    while heard.len() < 3 {
        match tokio::time::timeout_at(deadline, subscription.events.recv()).await {
            Ok(Ok(Event::Notified(payload))) => {
                heard.insert(payload);
            }
            Ok(Ok(Event::Connected)) => {}
            Ok(Err(err)) => panic!("subscription: {err}"),
            Err(_) => panic!("only {heard:?} arrived"),
        }
    }
    assert_eq!(heard.into_iter().collect::<Vec<_>>(), ["first", "second", "third"]);
}
