//! Liveness and readiness for load balancers (public), and metrics for operators, served on a
//! listener of their own ([`metrics_router`], `FACEOFF_METRICS_ADDR`, loopback by default): the
//! counts of top-ups and runs are not for the public. The metrics listener answers `/healthz`
//! and `/readyz` too: `faceoff worker` serves no pages, and its health check asks there.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{db, state::AppState, web::Routes};

pub fn routes() -> Routes<AppState> {
    Routes::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// The metrics listener's router: `GET /metrics`, and `/healthz` and `/readyz` for processes
/// without the public listener (`faceoff health --metrics`).
pub fn metrics_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The process is up and serving.
async fn healthz() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], "ok\n")
}

/// The database answers; 503 while it does not (the pool reconnects on its own).
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if db::ping(&state.pool).await {
        (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, [(header::CACHE_CONTROL, "no-store")], "database unreachable\n")
    }
}

/// Prometheus text: request counts and latency by route, the pool's connections, and the job
/// queue (read at each scrape; left as it was when the database does not answer).
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let pool = &state.pool;
    metrics::gauge!("db_pool_connections").set(f64::from(pool.size()));
    metrics::gauge!("db_pool_idle_connections").set(pool.num_idle() as f64);
    metrics::gauge!("db_pool_max_connections").set(f64::from(pool.options().get_max_connections()));
    let queue = tokio::time::timeout(std::time::Duration::from_secs(2), crate::jobs::queue_stats(pool)).await;
    match queue {
        Ok(Ok(queue)) => {
            metrics::gauge!("jobs_queued").set(queue.queued as f64);
            metrics::gauge!("jobs_queued_oldest_age_seconds").set(queue.oldest_queued_seconds);
            metrics::gauge!("jobs_running").set(queue.running as f64);
            metrics::gauge!("jobs_running_lease_expired").set(queue.lease_expired as f64);
        }
        Ok(Err(err)) => tracing::warn!("metrics: reading the job queue: {err}"),
        Err(_) => tracing::warn!("metrics: reading the job queue took more than 2 s"),
    }
    // Per provider route: every catalog provider (0 when none of its jobs waits) and any other
    // route that has queued jobs.
    let routes = tokio::time::timeout(std::time::Duration::from_secs(2), crate::jobs::queue::route_stats(pool)).await;
    match routes {
        Ok(Ok(routes)) => {
            let mut providers: Vec<String> =
                state.catalog.current().models().iter().map(|m| m.provider.clone()).collect();
            providers.extend(routes.iter().map(|r| r.provider.clone()));
            providers.sort();
            providers.dedup();
            for provider in providers {
                let stats = routes.iter().find(|r| r.provider == provider);
                let (queued, age) = stats.map_or((0.0, 0.0), |r| (r.queued as f64, r.oldest_queued_seconds));
                metrics::gauge!("jobs_queued_by_route", "route" => provider.clone()).set(queued);
                metrics::gauge!("jobs_queued_oldest_age_seconds_by_route", "route" => provider).set(age);
            }
        }
        Ok(Err(err)) => tracing::warn!("metrics: reading the queue per route: {err}"),
        Err(_) => tracing::warn!("metrics: reading the queue per route took more than 2 s"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
