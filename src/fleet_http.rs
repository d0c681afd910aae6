//! `GET /fleet` on the management port: the served digest per source and selector, the
//! streams by state and by digest, and the streams themselves (paged). The JSON shape is
//! documented in docs/fleet.md and only grows (new fields), never changes.

use crate::fleet::{Fleet, State, StreamReport, Totals, MAX_PAGE};
use crate::hub::Hub;
use crate::selector::Selector;
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Streams per page unless `?limit=` says otherwise.
const DEFAULT_PAGE: usize = 100;

/// The version of the `/fleet` body: raised only if a field changes meaning.
const FORMAT: u32 = 1;

#[derive(Clone)]
pub struct FleetState {
    pub hub: Arc<Hub>,
    pub fleet: Arc<Fleet>,
}

#[derive(Debug, Deserialize)]
pub struct FleetQuery {
    /// `1` / `true`: list only streams that are not current (behind or stalled).
    #[serde(default)]
    behind: Option<String>,
    /// Streams per page (1..=1000, default 100).
    #[serde(default)]
    limit: Option<usize>,
    /// List streams with an id greater than this (the previous page's `next_after`).
    #[serde(default)]
    after: Option<u64>,
}

/// A source and the digest of its document (as `put` prints it).
#[derive(Debug, Serialize, Deserialize)]
pub struct SourceDigest {
    pub name: String,
    pub digest: String,
}

/// A selector in use, the digest it is served, and how many streams use it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SelectorDigest {
    pub selector: String,
    pub digest: String,
    pub streams: u64,
}

/// Streams by state, for streams last handed one digest.
#[derive(Debug, Serialize, Deserialize)]
pub struct DigestTotals {
    /// First 16 hex digits; null for streams handed nothing yet.
    pub digest: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The body of `GET /fleet` (also read by `put --wait` and `watch --fleet`).
#[derive(Debug, Serialize, Deserialize)]
pub struct FleetBody {
    pub format: u32,
    pub generated_at: f64,
    pub stall_after_seconds: u64,
    /// The merged document (what a client without a selector gets).
    pub digest: Option<String>,
    pub published_at: Option<f64>,
    pub sources: Vec<SourceDigest>,
    pub selectors: Vec<SelectorDigest>,
    pub totals: Totals,
    pub by_digest: Vec<DigestTotals>,
    pub oldest_behind_seconds: f64,
    /// Whether `streams` lists only streams that are not current.
    pub behind_only: bool,
    pub streams: Vec<StreamReport>,
    /// Pass as `?after=` for the next page; null on the last page.
    pub next_after: Option<u64>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub async fn fleet(AxState(s): AxState<FleetState>, Query(q): Query<FleetQuery>) -> Response {
    let behind_only = match q.behind.as_deref() {
        None | Some("0" | "false" | "") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("behind={other:?}: use behind=1 (only streams that are not current) or leave it out\n"),
            )
                .into_response()
        }
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return (
            StatusCode::BAD_REQUEST,
            format!("limit={limit}: use 1 to {MAX_PAGE} streams per page\n"),
        )
            .into_response();
    }
    let after = q.after.unwrap_or(0);
    let mut report = s.fleet.report(&s.hub, |id, state| {
        id > after && (!behind_only || state != State::Current)
    });
    let next_after = (report.streams.len() > limit).then(|| report.streams[limit - 1].id);
    report.streams.truncate(limit);
    let snap = s.hub.current();
    let sources = match &snap {
        Some(snap) => s
            .hub
            .names
            .iter()
            .map(|n| SourceDigest {
                name: n.clone(),
                digest: snap
                    .view(&s.hub, &Selector::Source(n.clone()))
                    .digest
                    .to_string(),
            })
            .collect(),
        None => Vec::new(),
    };
    let body = FleetBody {
        format: FORMAT,
        generated_at: unix(SystemTime::now()),
        stall_after_seconds: crate::fleet::STALL_AFTER.as_secs(),
        digest: snap.as_ref().map(|s| s.all.digest.to_string()),
        published_at: snap.as_ref().map(|s| unix(s.published_at)),
        sources,
        selectors: report
            .selectors
            .into_iter()
            .map(|(selector, (digest, streams))| SelectorDigest {
                selector,
                digest,
                streams,
            })
            .collect(),
        totals: report.totals,
        by_digest: report
            .by_digest
            .into_iter()
            .map(|(d, totals)| DigestTotals {
                digest: (!d.is_empty()).then_some(d),
                totals,
            })
            .collect(),
        oldest_behind_seconds: report.oldest_behind_seconds,
        behind_only,
        streams: report.streams,
        next_after,
    };
    Json(body).into_response()
}

/// `/fleet`, with its own state (merged into the management router).
pub fn routes(state: FleetState) -> axum::Router {
    axum::Router::new()
        .route("/fleet", axum::routing::get(fleet))
        .with_state(state)
}
