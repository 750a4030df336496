//! The operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/status`, `POST /sync`.

use crate::app::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sync", post(sync))
        .with_state(shared)
}

async fn readyz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let served = s.served_commit();
    let mqtt = s.mqtt_connected.load(Ordering::SeqCst);
    match (served, mqtt) {
        (Some(c), true) => (StatusCode::OK, format!("ready: serving {c}\n")),
        (None, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no commit served yet\n".to_owned(),
        ),
        (Some(_), false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: mqtt not connected\n".to_owned(),
        ),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn status(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    match s.site_status_json() {
        Some(st) => (
            StatusCode::OK,
            serde_json::to_string_pretty(&st).unwrap_or_default(),
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned()),
    }
}

async fn sync(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    s.sync.notify_one();
    (StatusCode::ACCEPTED, "sync requested\n")
}
