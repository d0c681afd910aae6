//! Management HTTP: `/healthz` (the process answers), `/readyz` (a valid document is
//! loaded, the gRPC port listens and no shutdown is under way), `/metrics`, `/fleet`
//! (src/fleet_http.rs) and `/changes` (src/changes_http.rs).

use crate::hub::Hub;
use crate::status::{KeyState, RedisState, Status, Trigger};
use crate::telemetry::Telemetry;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Clone)]
pub struct Mgmt {
    pub status: Arc<Status>,
    pub hub: Arc<Hub>,
    pub telemetry: Arc<Telemetry>,
    /// Every open stream (`/fleet`).
    pub fleet: Arc<crate::fleet::Fleet>,
}

/// The body of `/readyz`. Never holds a secret: the Redis error is the client's own
/// message, which redis-rs does not fill with credentials.
#[derive(Serialize)]
struct Readiness {
    ready: bool,
    shutting_down: bool,
    grpc_listening: bool,
    redis: RedisState,
    redis_error: Option<String>,
    trigger: Trigger,
    key: KeyState,
    /// Each source's key state, when there are several sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<std::collections::BTreeMap<String, KeyState>>,
    document: Option<DocumentInfo>,
    /// Why the newest merge of several sources was refused (too large); the document
    /// above is the last good one.
    #[serde(skip_serializing_if = "Option::is_none")]
    merge_refused: Option<String>,
    streams: i64,
    /// Production-readiness findings about Redis (see docs/doctor.md).
    findings: Vec<crate::finding::Finding>,
}

#[derive(Serialize)]
struct DocumentInfo {
    digest: String,
    bytes: usize,
    flags: usize,
    age_seconds: f64,
}

pub fn router(state: Mgmt) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(crate::changes_http::routes(state.hub.clone()))
        .merge(crate::fleet_http::routes(crate::fleet_http::FleetState {
            hub: state.hub,
            fleet: state.fleet,
        }))
}

async fn readyz(State(m): State<Mgmt>) -> impl IntoResponse {
    let s = m.status.get();
    let document = m.hub.current().map(|snap| DocumentInfo {
        digest: snap.doc.digest.to_string(),
        bytes: snap.doc.canonical.len(),
        flags: snap.doc.flag_count,
        age_seconds: SystemTime::now()
            .duration_since(snap.published_at)
            .unwrap_or_default()
            .as_secs_f64(),
    });
    let ready = m.hub.ready() && m.status.grpc_listening() && !m.status.shutting_down();
    let body = Readiness {
        ready,
        shutting_down: m.status.shutting_down(),
        grpc_listening: m.status.grpc_listening(),
        redis: s.redis,
        redis_error: s.redis_error,
        trigger: s.trigger,
        key: s.key,
        sources: (s.sources.len() > 1).then_some(s.sources),
        document,
        merge_refused: m.hub.merge_refused(),
        streams: m.status.streams(),
        findings: s.findings,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(m): State<Mgmt>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.telemetry.render(),
    )
}
