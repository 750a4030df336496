//! The operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/status`, `POST /sync`.
//!
//! With credentials configured (`http_auth`), everything but `/healthz` and `/readyz` needs
//! HTTP basic authentication: the status names nodes, commits and errors, and `POST /sync`
//! makes the LO fetch. The probes stay open so container healthchecks need no secret.

use crate::shared::Shared;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Basic-auth credentials.
#[derive(Clone)]
pub struct Credentials {
    /// The expected `Authorization` header value (`Basic base64(user:password)`).
    expected: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(***)")
    }
}

impl Credentials {
    /// Credentials for `user` and `password`.
    pub fn new(user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Credentials {
            expected: Arc::new(format!("Basic {token}").into_bytes()),
        }
    }

    /// Whether an `Authorization` header value matches, in time independent of where it
    /// differs (the length is not secret).
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(&self.expected, given)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router, without authentication.
pub fn router(shared: Arc<Shared>) -> Router {
    router_with_auth(shared, None)
}

/// The router; with `auth`, every endpoint but the probes needs those credentials.
pub fn router_with_auth(shared: Arc<Shared>, auth: Option<Credentials>) -> Router {
    let mut protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sync", post(sync));
    if let Some(creds) = auth {
        protected = protected.layer(middleware::from_fn_with_state(creds, require_auth));
    }
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(shared)
}

async fn require_auth(State(creds): State<Credentials>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| creds.matches(v.as_bytes()));
    if ok {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"edgefleet-lo\"")],
        "authentication required\n",
    )
        .into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_compare_whole_values() {
        let c = Credentials::new("ops", "pw");
        assert!(c.matches(b"Basic b3BzOnB3"));
        assert!(!c.matches(b"Basic b3BzOnB4"));
        assert!(!c.matches(b"Basic b3BzOnB3 "));
        assert!(!c.matches(b""));
        assert_eq!(format!("{c:?}"), "Credentials(***)");
    }
}
