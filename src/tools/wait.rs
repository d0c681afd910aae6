//! `put --wait --service URL`: after storing, wait until every service serves the new
//! digest and every one of its streams has been handed its current flags (none behind,
//! none stalled), by polling each service's `GET /fleet?behind=1`.

use super::fleet_client::{endpoints, Endpoint, FleetClient, FleetClientError};
use crate::fleet_http::FleetBody;
use std::time::{Duration, Instant};

/// How often each service is asked while waiting.
const POLL: Duration = Duration::from_millis(100);

/// A stream not on its current digest when the wait ended.
#[derive(Debug)]
pub struct Behind {
    pub service: Endpoint,
    pub line: String,
}

/// Why a wait failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{0}")]
    Service(#[from] FleetClientError),
    #[error("--service {0} resolves to no address")]
    NoAddress(String),
    #[error("not every client has digest {digest} after {after:?}:\n{}", list(.behind, .unreachable))]
    Timeout {
        digest: String,
        after: Duration,
        behind: Vec<Behind>,
        unreachable: Vec<String>,
    },
}

fn list(behind: &[Behind], unreachable: &[String]) -> String {
    let mut lines: Vec<String> = behind
        .iter()
        .map(|b| format!("  {}: {}", b.service, b.line))
        .collect();
    lines.extend(unreachable.iter().map(|u| format!("  {u}")));
    lines.join("\n")
}

/// Every address of every `--service`, checked before anything is stored.
pub async fn resolve(services: &[String]) -> Result<Vec<Endpoint>, WaitError> {
    let mut all = Vec::new();
    for s in services {
        let found = endpoints(s).await?;
        if found.is_empty() {
            return Err(WaitError::NoAddress(s.clone()));
        }
        all.extend(found);
    }
    all.sort();
    all.dedup();
    Ok(all)
}

/// Whether a service serves `digest` (of a source, or of the merged document).
pub fn serves(body: &FleetBody, digest: &str) -> bool {
    body.digest.as_deref() == Some(digest) || body.sources.iter().any(|s| s.digest == digest)
}

/// Converged: serves the digest and no stream is behind or stalled.
fn converged(body: &FleetBody, digest: &str) -> bool {
    serves(body, digest) && body.totals.behind == 0 && body.totals.stalled == 0
}

/// One line per stream that is not current.
pub fn behind_lines(body: &FleetBody) -> Vec<String> {
    body.streams
        .iter()
        .map(|s| {
            format!(
                "{} stream {} peer {} provider_id {:?} selector {:?} ({}s{})",
                serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                s.id,
                if s.peer.is_empty() { "?" } else { &s.peer },
                s.provider_id,
                s.selector,
                s.behind_seconds
                    .or(s.pending_seconds)
                    .map_or(0.0, |x| (x * 10.0).round() / 10.0),
                if s.user_agent.is_empty() {
                    String::new()
                } else {
                    format!(", {}", s.user_agent)
                }
            )
        })
        .collect()
}

/// What a successful wait saw.
#[derive(Debug)]
pub struct Converged {
    pub streams: u64,
    pub services: usize,
    pub elapsed: Duration,
}

/// Waits until every endpoint serves `digest` with all streams current.
pub async fn wait(
    client: &FleetClient,
    endpoints: &[Endpoint],
    digest: &str,
    timeout: Duration,
) -> Result<Converged, WaitError> {
    let start = Instant::now();
    let mut done: Vec<Option<u64>> = vec![None; endpoints.len()];
    loop {
        let mut behind = Vec::new();
        let mut unreachable = Vec::new();
        for (i, at) in endpoints.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            match client.fleet(at, "behind=1&limit=1000").await {
                Ok(body) if converged(&body, digest) => done[i] = Some(body.totals.streams),
                Ok(body) if !serves(&body, digest) => behind.push(Behind {
                    service: at.clone(),
                    line: format!(
                        "does not serve {digest} yet (serves {})",
                        body.sources
                            .iter()
                            .map(|s| format!("{}={}", s.name, &s.digest[..12.min(s.digest.len())]))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
                Ok(body) => behind.extend(behind_lines(&body).into_iter().map(|line| Behind {
                    service: at.clone(),
                    line,
                })),
                Err(e) => unreachable.push(e.to_string()),
            }
        }
        if done.iter().all(Option::is_some) {
            return Ok(Converged {
                streams: done.iter().flatten().sum(),
                services: endpoints.len(),
                elapsed: start.elapsed(),
            });
        }
        if start.elapsed() >= timeout {
            return Err(WaitError::Timeout {
                digest: digest.to_string(),
                after: timeout,
                behind,
                unreachable,
            });
        }
        tokio::time::sleep(POLL.min(timeout.saturating_sub(start.elapsed()))).await;
    }
}
