//! The fleet view: who is connected and whether each stream has the current flags.
//!
//! Every SyncFlags stream registers here when it opens and is removed when it ends (the
//! [`Registration`] guard), so churn leaves nothing behind. Per message a stream does a
//! few relaxed atomic stores ([`StreamState::handed`]) and one load (and, after a message,
//! one store) when the transport asks for the next ([`StreamState::taken`]); everything
//! else (which streams are behind, which are stalled) is worked out only when someone
//! asks: `GET /fleet` and the metrics scrape ([`Fleet::report`]).
//!
//! A stream is **current** when the last message the transport took from it carries the
//! current digest for its selector, **behind** when not, and **stalled** when its newest
//! message has not been taken by the transport (HTTP/2 flow control: the client stopped
//! reading, and the stream's send buffer is full) for longer than [`STALL_AFTER`].
//! Stalled wins over behind. "Taken" is when the transport asks the stream for its next
//! message: hyper does so once the previous one is in h2's send buffer.

use crate::flags::Digest;
use crate::hub::{Hub, View};
use crate::selector::Selector;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a message may wait for the transport before its stream counts as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// Client-supplied text (provider id, user agent, selector) is cut to this many bytes:
/// the registry's memory per stream stays bounded whatever a client sends.
const MAX_TEXT: usize = 128;

/// `/fleet` lists at most this many streams per page.
pub const MAX_PAGE: usize = 1000;

/// Milliseconds since the Unix epoch (0 is never a real time here: it means "none").
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1)
}

fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1)
}

/// The first 8 bytes of a digest: what a stream records (0: nothing handed yet).
fn prefix(d: &Digest) -> u64 {
    u64::from_be_bytes(d.0[..8].try_into().expect("a digest has 32 bytes")).max(1)
}

fn capped(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A selector as a client would write it.
pub fn selector_text(s: &Selector) -> String {
    match s {
        Selector::All => String::new(),
        Selector::Source(n) => format!("source={n}"),
        Selector::FlagSet(Some(id)) => format!("flagSetId={id}"),
        Selector::FlagSet(None) => "flagSetId=".to_string(),
    }
}

/// Who a stream is, as the request told (capped).
#[derive(Debug, Default)]
pub struct Client {
    /// `IP:port`, `unix` for the Unix socket, or empty when unknown.
    pub peer: String,
    pub provider_id: String,
    pub user_agent: String,
}

/// One open stream.
#[derive(Debug)]
pub struct StreamState {
    pub id: u64,
    pub client: Client,
    pub selector: Selector,
    connected_ms: u64,
    /// First 8 bytes of the last digest the transport took (0: none yet).
    digest: AtomicU64,
    /// First 8 bytes of the digest of the newest message, handed but not yet taken.
    pending_digest: AtomicU64,
    handed_ms: AtomicU64,
    messages: AtomicU64,
    /// When the newest message was handed, until the transport asks for the next (0).
    pending_ms: AtomicU64,
    /// When the evaluation first saw this stream behind (0: not behind).
    behind_ms: AtomicU64,
}

impl StreamState {
    /// A message with this digest goes to the transport.
    pub fn handed(&self, digest: &Digest) {
        let now = now_ms();
        self.pending_digest.store(prefix(digest), Relaxed);
        self.handed_ms.store(now, Relaxed);
        self.pending_ms.store(now, Relaxed);
        self.behind_ms.store(0, Relaxed);
        self.messages.fetch_add(1, Relaxed);
    }

    /// The transport asks for the next message: the previous one was taken.
    pub fn taken(&self) {
        if self.pending_ms.load(Relaxed) != 0 {
            self.digest
                .store(self.pending_digest.load(Relaxed), Relaxed);
            self.pending_ms.store(0, Relaxed);
        }
    }
}

/// Removes its stream from the registry when the stream ends.
#[derive(Debug)]
pub struct Registration {
    fleet: Arc<Fleet>,
    pub stream: Arc<StreamState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fleet
            .streams
            .lock()
            .expect("fleet lock poisoned")
            .remove(&self.stream.id);
    }
}

/// Every open stream, by id.
#[derive(Debug, Default)]
pub struct Fleet {
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, Arc<StreamState>>>,
}

/// A stream's state as evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Current,
    Behind,
    Stalled,
}

/// One stream in `/fleet`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamReport {
    pub id: u64,
    pub peer: String,
    pub provider_id: String,
    pub selector: String,
    pub user_agent: String,
    /// Unix seconds.
    pub connected_at: f64,
    pub state: State,
    /// First 16 hex digits of the digest of the last message the transport took from the
    /// stream (null: none yet).
    pub digest: Option<String>,
    /// Unix seconds (null: nothing handed yet).
    pub handed_at: Option<f64>,
    pub messages: u64,
    /// How long the stream has been behind (null: it is current).
    pub behind_seconds: Option<f64>,
    /// How long its newest message has waited for the transport (null: taken).
    pub pending_seconds: Option<f64>,
}

/// Streams by state.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub streams: u64,
    pub current: u64,
    pub behind: u64,
    pub stalled: u64,
}

impl Totals {
    fn add(&mut self, s: State) {
        self.streams += 1;
        match s {
            State::Current => self.current += 1,
            State::Behind => self.behind += 1,
            State::Stalled => self.stalled += 1,
        }
    }
}

/// Everything the evaluation found, streams sorted by id.
#[derive(Debug, Default)]
pub struct Report {
    pub totals: Totals,
    /// By digest last handed (16 hex digits; "" for streams handed nothing yet).
    pub by_digest: BTreeMap<String, Totals>,
    /// The digest each selector in use is served (full hex), with its stream count.
    pub selectors: BTreeMap<String, (String, u64)>,
    /// The longest any stream not on its current digest has been so (seconds).
    pub oldest_behind_seconds: f64,
    pub streams: Vec<StreamReport>,
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn age(now: u64, since: u64) -> f64 {
    secs(now.saturating_sub(since))
}

impl Fleet {
    pub fn new() -> Arc<Self> {
        Arc::new(Fleet::default())
    }

    /// Registers a new stream; it is removed when the returned guard drops.
    pub fn register(self: &Arc<Self>, client: Client, selector: Selector) -> Registration {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let stream = Arc::new(StreamState {
            id,
            client: Client {
                peer: capped(&client.peer),
                provider_id: capped(&client.provider_id),
                user_agent: capped(&client.user_agent),
            },
            selector,
            connected_ms: now_ms(),
            digest: AtomicU64::new(0),
            pending_digest: AtomicU64::new(0),
            handed_ms: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            pending_ms: AtomicU64::new(0),
            behind_ms: AtomicU64::new(0),
        });
        self.streams
            .lock()
            .expect("fleet lock poisoned")
            .insert(id, stream.clone());
        Registration {
            fleet: self.clone(),
            stream,
        }
    }

    /// Streams registered now.
    pub fn len(&self) -> usize {
        self.streams.lock().expect("fleet lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evaluates every stream against the hub's current snapshot. `keep(id, state)`
    /// decides which streams are listed in `streams` (the totals count them all).
    pub fn report(&self, hub: &Hub, keep: impl Fn(u64, State) -> bool) -> Report {
        let streams: Vec<Arc<StreamState>> = {
            let map = self.streams.lock().expect("fleet lock poisoned");
            map.values().cloned().collect()
        };
        let snap = hub.current();
        let published_ms = snap.as_ref().map_or(0, |s| system_ms(s.published_at));
        let mut views: HashMap<&Selector, Arc<View>> = HashMap::new();
        let now = now_ms();
        let mut out = Report::default();
        for s in &streams {
            let view = snap.as_ref().map(|snap| {
                views
                    .entry(&s.selector)
                    .or_insert_with(|| snap.view(hub, &s.selector))
                    .clone()
            });
            let digest = s.digest.load(Relaxed);
            let pending = s.pending_ms.load(Relaxed);
            let on_current = view.as_ref().is_none_or(|v| prefix(&v.digest) == digest);
            let behind_seconds = if on_current {
                s.behind_ms.store(0, Relaxed);
                None
            } else {
                // First seen behind now: behind since the current snapshot was published
                // (or since it connected, if later).
                let since = match s.behind_ms.load(Relaxed) {
                    0 => {
                        let since = published_ms.max(s.connected_ms);
                        s.behind_ms.store(since, Relaxed);
                        since
                    }
                    t => t,
                };
                Some(age(now, since))
            };
            let stalled =
                pending != 0 && now.saturating_sub(pending) > STALL_AFTER.as_millis() as u64;
            let state = if stalled {
                State::Stalled
            } else if on_current {
                State::Current
            } else {
                State::Behind
            };
            out.totals.add(state);
            let digest_hex = (digest != 0).then(|| format!("{digest:016x}"));
            out.by_digest
                .entry(digest_hex.clone().unwrap_or_default())
                .or_default()
                .add(state);
            if let Some(v) = &view {
                out.selectors
                    .entry(selector_text(&s.selector))
                    .or_insert_with(|| (v.digest.to_string(), 0))
                    .1 += 1;
            }
            if let Some(b) = behind_seconds {
                out.oldest_behind_seconds = out.oldest_behind_seconds.max(b);
            }
            if !keep(s.id, state) {
                continue;
            }
            let handed = s.handed_ms.load(Relaxed);
            out.streams.push(StreamReport {
                id: s.id,
                peer: s.client.peer.clone(),
                provider_id: s.client.provider_id.clone(),
                selector: selector_text(&s.selector),
                user_agent: s.client.user_agent.clone(),
                connected_at: secs(s.connected_ms),
                state,
                digest: digest_hex,
                handed_at: (handed != 0).then(|| secs(handed)),
                messages: s.messages.load(Relaxed),
                behind_seconds,
                pending_seconds: (pending != 0).then(|| age(now, pending)),
            });
        }
        out.streams.sort_by_key(|s| s.id);
        out
    }
}

/// The fleet's metrics, read at scrape time: streams by state, and the age of the oldest
/// stream not on its current digest. Keep the returned instruments alive.
pub fn metrics(
    provider: &impl opentelemetry::metrics::MeterProvider,
    fleet: Arc<Fleet>,
    hub: Arc<Hub>,
) -> [opentelemetry::metrics::ObservableGauge<f64>; 2] {
    use opentelemetry::KeyValue;
    let meter = provider.meter("flagd-redis-sync");
    let (f, h) = (fleet.clone(), hub.clone());
    [
        meter
            .f64_observable_gauge("flagd_redis_sync.streams.state")
            .with_description(
                "SyncFlags streams by state: current (has its selector's current digest), behind, stalled (its newest message not taken by the transport for 5 s)",
            )
            .with_callback(move |o| {
                let t = f.report(&h, |_, _| false).totals;
                for (state, n) in [
                    ("current", t.current),
                    ("behind", t.behind),
                    ("stalled", t.stalled),
                ] {
                    o.observe(n as f64, &[KeyValue::new("state", state)]);
                }
            })
            .build(),
        meter
            .f64_observable_gauge("flagd_redis_sync.streams.oldest_behind")
            .with_unit("s")
            .with_description(
                "How long the stream longest without its current digest has been so (0: every stream is current)",
            )
            .with_callback(move |o| {
                o.observe(fleet.report(&hub, |_, _| false).oldest_behind_seconds, &[])
            })
            .build(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{parse, Options};

    fn doc(v: &str) -> crate::flags::Document {
        parse(
            format!(r#"{{"flags":{{"f":{{"state":"ENABLED","variants":{{"v":"{v}"}},"defaultVariant":"v"}}}}}}"#)
                .as_bytes(),
            &Options::default(),
        )
        .unwrap()
    }

    #[test]
    fn streams_are_current_behind_or_stalled_and_leave_nothing_behind() {
        let hub = Hub::new(vec!["flags".into()], None);
        let fleet = Fleet::new();
        hub.publish(doc("a"));
        let a = fleet.register(Client::default(), Selector::All);
        let b = fleet.register(
            Client {
                provider_id: "x".repeat(1000),
                ..Client::default()
            },
            Selector::All,
        );
        assert!(b.stream.client.provider_id.len() <= MAX_TEXT + '…'.len_utf8());
        let d = hub.current().unwrap().all.digest;
        a.stream.handed(&d);
        a.stream.taken();
        let r = fleet.report(&hub, |_, _| true);
        assert_eq!(
            r.totals,
            Totals {
                streams: 2,
                current: 1,
                behind: 1,
                stalled: 0
            }
        );
        assert_eq!(r.streams[0].state, State::Current);
        assert_eq!(r.streams[1].state, State::Behind);
        assert_eq!(r.selectors[""], (d.to_string(), 2));
        // Handed but not taken: still behind; never taken for longer than STALL_AFTER:
        // stalled.
        b.stream.handed(&d);
        assert_eq!(fleet.report(&hub, |_, _| false).totals.behind, 1);
        b.stream
            .pending_ms
            .store(now_ms() - STALL_AFTER.as_millis() as u64 - 1000, Relaxed);
        let r = fleet.report(&hub, |_, s| s != State::Current);
        assert_eq!((r.totals.current, r.totals.stalled), (1, 1));
        assert_eq!(r.streams.len(), 1);
        assert_eq!(r.streams[0].id, b.stream.id);
        // A new document: both behind (one still stalled).
        hub.publish(doc("b"));
        let r = fleet.report(&hub, |_, _| true);
        assert_eq!((r.totals.behind, r.totals.stalled), (1, 1));
        assert!(r.oldest_behind_seconds >= 0.0);
        drop(a);
        drop(b);
        assert!(fleet.is_empty());
    }
}
