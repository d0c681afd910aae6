//! `GET /changes` (the last publishes: time, source, digest, flags added, removed and
//! changed) and `GET /changes/{digest}` (one of the last documents, as stored) on the
//! management port. Documented in docs/fleet.md.

use crate::hub::Hub;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;

/// The header naming the source a document from `/changes/{digest}` belonged to.
pub const SOURCE_HEADER: &str = "x-flagd-redis-sync-source";

#[derive(Serialize)]
struct Remembered {
    digest: String,
    source: String,
    bytes: usize,
}

#[derive(Serialize)]
struct Body {
    format: u32,
    changes: Vec<crate::changes::Change>,
    /// The documents `/changes/{digest}` can return, newest first.
    documents: Vec<Remembered>,
}

async fn changes(State(hub): State<Arc<Hub>>) -> Response {
    Json(Body {
        format: 1,
        changes: hub.changes.changes(),
        documents: hub
            .changes
            .documents()
            .into_iter()
            .map(|(digest, source, bytes)| Remembered {
                digest,
                source,
                bytes,
            })
            .collect(),
    })
    .into_response()
}

async fn document(State(hub): State<Arc<Hub>>, Path(digest): Path<String>) -> Response {
    match hub.changes.document(&digest) {
        Ok(doc) => (
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::HeaderName::from_static(SOURCE_HEADER), doc.source),
            ],
            doc.json.to_string(),
        )
            .into_response(),
        Err(0) => (
            StatusCode::NOT_FOUND,
            format!(
                "no remembered document has digest {digest:?} (give at least 12 hex digits); this instance keeps the last {} distinct documents: GET /changes lists them\n",
                crate::changes::MAX_DOCUMENTS
            ),
        )
            .into_response(),
        Err(n) => (
            StatusCode::CONFLICT,
            format!("{n} remembered documents start with {digest:?}; give more digits\n"),
        )
            .into_response(),
    }
}

/// `/changes` and `/changes/{digest}`, with their own state.
pub fn routes(hub: Arc<Hub>) -> axum::Router {
    axum::Router::new()
        .route("/changes", axum::routing::get(changes))
        .route("/changes/{digest}", axum::routing::get(document))
        .with_state(hub)
}
