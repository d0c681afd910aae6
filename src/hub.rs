//! The latest snapshot and its broadcast fan-out.
//!
//! One writer (the watcher) publishes; any number of streams read. A stream subscribes
//! to the broadcast **before** it reads the current snapshot, so no change can fall
//! between the two; it then drops anything whose digest it already sent. The broadcast
//! buffer is tiny on purpose: a lagging stream only ever wants the newest snapshot, and
//! skips straight to it (see [`Hub::newest`]).

use crate::flags::{Digest, Document};
use crate::selector::Selector;
use crate::wire::{encode_responses, EncodedLegacySyncFlagsResponse, EncodedSyncFlagsResponse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::sync::broadcast;

/// Slots in the broadcast ring. Each holds an `Arc`, and a stream that falls behind
/// skips to the newest, so a few are enough; more would only keep old documents alive.
const BROADCAST_CAPACITY: usize = 4;

/// One selection of a snapshot, encoded once and shared by every stream that wants it.
#[derive(Debug)]
pub struct View {
    /// Digest of `json`: streams compare it to what they last sent.
    pub digest: Digest,
    /// The flag configuration JSON (for FetchAllFlags).
    pub json: Arc<str>,
    /// The encoded `flagd.sync.v1.SyncFlagsResponse`.
    pub v1: EncodedSyncFlagsResponse,
    /// The encoded legacy `sync.v1.SyncFlagsResponse`.
    pub legacy: EncodedLegacySyncFlagsResponse,
}

/// A published flag document.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated document.
    pub doc: Document,
    /// When it was published.
    pub published_at: SystemTime,
    /// The whole document, encoded at publish time (the common case needs no lock).
    pub all: Arc<View>,
    /// Other selections, encoded on first use.
    filtered: Mutex<HashMap<Selector, Arc<View>>>,
}

impl Snapshot {
    /// The view for a selector: computed once per snapshot, then shared.
    pub fn view(
        &self,
        selector: &Selector,
        source: &str,
        ctx: Option<&prost_types::Struct>,
    ) -> Arc<View> {
        if selects_whole(selector, source) {
            return self.all.clone();
        }
        let mut cache = self.filtered.lock().expect("view cache poisoned");
        cache
            .entry(selector.clone())
            .or_insert_with(|| {
                let value = selector
                    .apply(&self.doc.value, source)
                    .unwrap_or_else(|| self.doc.value.clone());
                let json = serde_json::to_string(&value).expect("a Value always serialises");
                Arc::new(make_view(json, ctx))
            })
            .clone()
    }
}

fn selects_whole(selector: &Selector, source: &str) -> bool {
    match selector {
        Selector::All => true,
        Selector::Source(s) => s == source,
        Selector::FlagSet(_) => false,
    }
}

fn make_view(json: String, ctx: Option<&prost_types::Struct>) -> View {
    let (v1, legacy) = encode_responses(&json, ctx);
    View {
        digest: Digest::of(json.as_bytes()),
        json: json.into(),
        v1,
        legacy,
    }
}

/// The current snapshot and the channel that announces new ones.
#[derive(Debug)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Snapshot>>,
    current: RwLock<Option<Arc<Snapshot>>>,
    /// The last few snapshots, so that the broadcast ring never drops the last reference
    /// to one: freeing a large document (its parsed tree) takes milliseconds, and the
    /// ring frees inside `send`, before it wakes any stream. Freed after the send instead.
    retired: Mutex<std::collections::VecDeque<Arc<Snapshot>>>,
    /// Static sync context sent with every stream message.
    pub context: Option<prost_types::Struct>,
    /// The name of the single source (the Redis key), for `source=` selectors.
    pub source: String,
}

impl Hub {
    pub fn new(source: String, context: Option<prost_types::Struct>) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Hub {
            tx,
            current: RwLock::new(None),
            retired: Mutex::new(std::collections::VecDeque::new()),
            context,
            source,
        }
    }

    /// Publishes a document unless its digest equals the current one. Returns whether
    /// it was published. Called by one task only (the watcher).
    pub fn publish(&self, doc: Document) -> bool {
        if self.current().is_some_and(|c| c.doc.digest == doc.digest) {
            return false;
        }
        let (v1, legacy) = encode_responses(&doc.canonical, self.context.as_ref());
        let all = Arc::new(View {
            digest: doc.digest,
            json: doc.canonical.as_str().into(),
            v1,
            legacy,
        });
        let snap = Arc::new(Snapshot {
            doc,
            published_at: SystemTime::now(),
            all,
            filtered: Mutex::new(HashMap::new()),
        });
        // Current first, then announce: a stream that subscribed before the send but
        // read `current` after this line sees the new snapshot either way.
        *self.current.write().expect("hub lock poisoned") = Some(snap.clone());
        let mut retired = self.retired.lock().expect("hub lock poisoned");
        retired.push_back(snap.clone());
        let _ = self.tx.send(snap);
        // After the streams were woken: whatever falls out here is freed off their path.
        while retired.len() > BROADCAST_CAPACITY + 1 {
            retired.pop_front();
        }
        true
    }

    /// The latest snapshot, if any document was loaded.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.read().expect("hub lock poisoned").clone()
    }

    /// A receiver of future snapshots. Subscribe first, then read [`Hub::current`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Waits for the next snapshot and returns the newest available, skipping any the
    /// receiver fell behind on. `None` when the hub is gone.
    pub async fn newest(rx: &mut broadcast::Receiver<Arc<Snapshot>>) -> Option<Arc<Snapshot>> {
        let mut latest = loop {
            match rx.recv().await {
                Ok(s) => break s,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        };
        loop {
            match rx.try_recv() {
                Ok(s) => latest = s,
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return Some(latest),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{parse, Options};

    fn doc(v: &str) -> Document {
        let s = format!(
            r#"{{"flags":{{"f":{{"state":"ENABLED","variants":{{"v":"{v}"}},"defaultVariant":"v"}}}}}}"#
        );
        parse(s.as_bytes(), &Options::default()).unwrap()
    }

    #[test]
    fn identical_content_is_published_once() {
        let hub = Hub::new("flags".into(), None);
        let mut rx = hub.subscribe();
        assert!(hub.publish(doc("a")));
        assert!(!hub.publish(doc("a")));
        assert!(hub.publish(doc("b")));
        assert_eq!(rx.try_recv().unwrap().doc.digest, doc("a").digest);
        assert_eq!(rx.try_recv().unwrap().doc.digest, doc("b").digest);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_lagging_receiver_skips_to_the_newest() {
        let hub = Hub::new("flags".into(), None);
        let mut rx = hub.subscribe();
        for i in 0..(BROADCAST_CAPACITY * 3) {
            hub.publish(doc(&i.to_string()));
        }
        let last = doc(&(BROADCAST_CAPACITY * 3 - 1).to_string());
        assert_eq!(Hub::newest(&mut rx).await.unwrap().doc.digest, last.digest);
    }

    #[test]
    fn views_are_shared_per_selector() {
        let hub = Hub::new("flags".into(), None);
        hub.publish(doc("a"));
        let snap = hub.current().unwrap();
        let sel = Selector::FlagSet(None);
        let a = snap.view(&sel, "flags", None);
        let b = snap.view(&sel, "flags", None);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(
            &snap.view(&Selector::All, "flags", None),
            &snap.all
        ));
        assert!(Arc::ptr_eq(
            &snap.view(&Selector::Source("flags".into()), "flags", None),
            &snap.all
        ));
    }
}
