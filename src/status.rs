//! What the service knows about itself, for /readyz, gRPC health and logs.
//! Written by the watcher and the servers, read by the management endpoints.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use tokio::sync::watch;

/// How changes are noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Not connected yet.
    Unknown,
    /// Keyspace notifications, confirmed enabled (and the fallback poll).
    Keyspace,
    /// Subscribed to keyspace notifications, but CONFIG GET was refused, so whether
    /// Redis sends them is unknown; the poll guarantees convergence.
    KeyspaceUnverified,
    /// RESP3 client-side-caching invalidations (`CLIENT TRACKING ON BCAST PREFIX key`),
    /// used where keyspace notifications cannot be confirmed (CONFIG refused); keyspace
    /// events, if the server sends them, are still subscribed.
    Tracking,
    /// Notifications are off and could not be enabled: the poll alone.
    PollOnly,
}

/// Redis connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisState {
    Connecting,
    Connected,
    Down,
}

/// The state of the flag key as last read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum KeyState {
    /// Never read yet.
    Unknown,
    /// Holds the document being served.
    Valid,
    /// Does not exist: the last good document (if any) is still served.
    Missing,
    /// Holds a document that was refused: the last good one is still served.
    Refused(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub redis: RedisState,
    /// The last Redis error, with any credential removed.
    pub redis_error: Option<String>,
    pub trigger: Trigger,
    /// All sources at a glance: the first refused one, else missing, else unknown, else valid.
    pub key: KeyState,
    /// Each source's key, by source name.
    pub sources: std::collections::BTreeMap<String, KeyState>,
    /// The doctor's findings at the last connect (empty until the first check ends).
    pub findings: Vec<crate::finding::Finding>,
}

/// Shared, cheap-to-read health state.
#[derive(Debug)]
pub struct Status {
    inner: Mutex<Snapshot>,
    grpc_listening: AtomicBool,
    shutting_down: AtomicBool,
    streams: AtomicI64,
    ready_tx: watch::Sender<bool>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            inner: Mutex::new(Snapshot {
                redis: RedisState::Connecting,
                redis_error: None,
                trigger: Trigger::Unknown,
                key: KeyState::Unknown,
                sources: Default::default(),
                findings: Vec::new(),
            }),
            grpc_listening: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            streams: AtomicI64::new(0),
            ready_tx: watch::channel(false).0,
        }
    }
}

impl Status {
    pub fn get(&self) -> Snapshot {
        self.inner.lock().expect("status poisoned").clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.inner.lock().expect("status poisoned"));
    }

    /// Records one source's key state and recomputes the summary in `key`.
    pub fn set_source(&self, name: &str, state: KeyState) {
        self.update(|s| {
            s.sources.insert(name.to_string(), state);
            let several = s.sources.len() > 1;
            let states = || s.sources.iter();
            s.key = if let Some((n, KeyState::Refused(r))) =
                states().find(|(_, k)| matches!(k, KeyState::Refused(_)))
            {
                KeyState::Refused(if several {
                    format!("source {n}: {r}")
                } else {
                    r.clone()
                })
            } else if states().any(|(_, k)| *k == KeyState::Missing) {
                KeyState::Missing
            } else if states().any(|(_, k)| *k == KeyState::Unknown) {
                KeyState::Unknown
            } else {
                KeyState::Valid
            };
        });
    }

    /// One source's key state.
    pub fn source(&self, name: &str) -> KeyState {
        self.inner
            .lock()
            .expect("status poisoned")
            .sources
            .get(name)
            .cloned()
            .unwrap_or(KeyState::Unknown)
    }

    pub fn set_grpc_listening(&self) {
        self.grpc_listening.store(true, Ordering::SeqCst);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.refresh_ready(false);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn grpc_listening(&self) -> bool {
        self.grpc_listening.load(Ordering::SeqCst)
    }

    pub fn stream_opened(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_closed(&self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn streams(&self) -> i64 {
        self.streams.load(Ordering::Relaxed)
    }

    /// Re-evaluates readiness given whether a document is loaded.
    pub fn refresh_ready(&self, has_document: bool) {
        let ready = has_document && self.grpc_listening() && !self.shutting_down();
        self.ready_tx
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// Follows readiness changes (for the gRPC health service).
    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.ready_tx.subscribe()
    }
}
