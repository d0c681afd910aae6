//! The latest snapshot and its broadcast fan-out.
//!
//! Writers (the watchers) publish each source's newest document; the hub merges the
//! sources into one snapshot and announces it. Any number of streams read. A stream
//! subscribes to the broadcast **before** it reads the current snapshot, so no change can
//! fall between the two; it then drops anything whose digest it already sent, so a change
//! in one source reaches only the streams whose selection changed. The broadcast buffer
//! is tiny on purpose: a lagging stream only ever wants the newest snapshot, and skips
//! straight to it (see [`Hub::newest`]).

use crate::flags::{Digest, Document};
use crate::selector::Selector;
use crate::wire::{encode_shared, EncodedLegacySyncFlagsResponse, EncodedSyncFlagsResponse};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::sync::broadcast;
use tracing::{error, info, warn};

/// Slots in the broadcast ring. Each holds an `Arc`, and a stream that falls behind
/// skips to the newest, so a few are enough; more would only keep old documents alive.
const BROADCAST_CAPACITY: usize = 4;

/// One selection of a snapshot, encoded once and shared by every stream that wants it.
#[derive(Debug)]
pub struct View {
    /// Digest of `json`: streams compare it to what they last sent.
    pub digest: Digest,
    /// The flag configuration JSON (for FetchAllFlags); the encoded messages share it.
    pub json: Arc<String>,
    /// The encoded `flagd.sync.v1.SyncFlagsResponse`.
    pub v1: EncodedSyncFlagsResponse,
    /// The encoded legacy `sync.v1.SyncFlagsResponse`.
    pub legacy: EncodedLegacySyncFlagsResponse,
}

/// One source's newest valid document, with its view encoded once (shared by every
/// snapshot until the source changes).
#[derive(Debug)]
pub struct SourceDoc {
    pub doc: Arc<Document>,
    pub view: Arc<View>,
}

/// What [`Hub::announce_sources`] changed, and the change history it still owes.
#[must_use = "the changes are recorded by Published::record"]
pub struct Published {
    /// The indexes of the sources whose content changed.
    pub changed: Vec<usize>,
    /// Per changed source: its previous document and the new one.
    records: Vec<(usize, Option<Arc<SourceDoc>>, Arc<Document>)>,
}

impl Published {
    /// Records the changes in `hub`'s history; returns the sources that changed. Each
    /// source is published by one watcher, in order, so each source's history keeps its
    /// order; publishes of different sources within the same instant may be listed in
    /// either order.
    pub fn record(self, hub: &Hub) -> Vec<usize> {
        for (i, previous, doc) in self.records {
            hub.changes
                .record(&hub.names[i], previous.as_ref().map(|s| &*s.doc), &doc);
        }
        self.changed
    }
}

/// A published state of every source.
#[derive(Debug)]
pub struct Snapshot {
    /// What a client without a selector gets: the sources merged (with one source, that
    /// source's document itself).
    pub doc: Arc<Document>,
    /// When it was published.
    pub published_at: SystemTime,
    /// The whole merged document, encoded at publish time (the common case needs no lock).
    pub all: Arc<View>,
    /// Each source's document, in source order (`None`: not loaded yet).
    sources: Vec<Option<Arc<SourceDoc>>>,
    /// Other selections, encoded on first use.
    filtered: Mutex<HashMap<Selector, Arc<View>>>,
}

impl Snapshot {
    /// The view for a selector: computed once per snapshot, then shared.
    pub fn view(&self, hub: &Hub, selector: &Selector) -> Arc<View> {
        match selector {
            Selector::All => return self.all.clone(),
            Selector::Source(name) => match hub.names.iter().position(|n| n == name) {
                // One source: its document is the merged one (also when it came from the
                // snapshot file, before the first read).
                Some(_) if hub.names.len() == 1 => return self.all.clone(),
                Some(i) => {
                    if let Some(Some(s)) = self.sources.get(i) {
                        return s.view.clone();
                    }
                }
                None => {}
            },
            Selector::FlagSet(_) => {}
        }
        let mut cache = self.filtered.lock().expect("view cache poisoned");
        cache
            .entry(selector.clone())
            .or_insert_with(|| {
                let value = match selector {
                    Selector::FlagSet(want) => {
                        crate::selector::flag_set(&self.doc.value(), want.as_deref())
                    }
                    // A source that is unknown or not loaded: an empty set, not an error.
                    _ => serde_json::json!({ "flags": {} }),
                };
                let json = serde_json::to_string(&value).expect("a Value always serialises");
                Arc::new(make_view(json, hub.context.as_ref()))
            })
            .clone()
    }
}

fn make_view(json: String, ctx: Option<&prost_types::Struct>) -> View {
    let json = Arc::new(json);
    let (v1, legacy) = encode_shared(&json, ctx);
    View {
        digest: Digest::of(json.as_bytes()),
        json,
        v1,
        legacy,
    }
}

/// A view of a validated document: its canonical JSON, shared (not copied) by the view
/// and both encoded messages.
fn doc_view(doc: &Document, ctx: Option<&prost_types::Struct>) -> Arc<View> {
    let (v1, legacy) = encode_shared(&doc.canonical, ctx);
    Arc::new(View {
        digest: doc.digest,
        json: doc.canonical.clone(),
        v1,
        legacy,
    })
}

/// Why the sources could not be merged into one document.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    #[error("the merged document of all sources is at least {at_least} bytes, above the limit of {limit} bytes (--max-payload-bytes); sources: {sources}")]
    TooLarge {
        at_least: usize,
        limit: usize,
        /// Each loaded source's size, flag count and set-level metadata size (copied
        /// into each of its flags), to show which one to shrink.
        sources: String,
    },
}

/// A flag with its source's document-level metadata merged into its own (its own keys
/// win), as flagd's store does.
fn with_set_metadata(flag: &Value, set_meta: Option<&Map<String, Value>>) -> Value {
    let mut flag = flag.clone();
    if let (Some(set_meta), Some(f)) = (set_meta.filter(|m| !m.is_empty()), flag.as_object_mut()) {
        let meta = f
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            for (k, v) in set_meta {
                meta.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    flag
}

/// The length of a value's compact JSON, counted without building it.
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("counting never fails");
    count.0
}

fn describe_sources(names: &[String], sources: &[Option<Arc<SourceDoc>>]) -> String {
    names
        .iter()
        .zip(sources)
        .filter_map(|(name, s)| {
            let doc = &s.as_ref()?.doc;
            let meta = doc.value().get("metadata").map_or(0, json_len);
            Some(format!(
                "{name} ({} bytes, {} flags, {meta} bytes of set metadata copied into each flag)",
                doc.canonical.len(),
                doc.flag_count
            ))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the publishers have reported, per source.
#[derive(Debug)]
struct Sources {
    /// The newest valid document of each source.
    docs: Vec<Option<Arc<SourceDoc>>>,
    /// Whether each source's watcher has tried a first read (or a first connection):
    /// nothing is announced before every source is settled, so streams never get a
    /// partial first set just because one watcher connected a little earlier.
    settled: Vec<bool>,
    /// Documents arrived that were not announced yet.
    pending: bool,
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
    /// Serialises publishers (one watcher per Cluster slot may publish concurrently).
    publishing: Mutex<Sources>,
    /// Flag names defined by more than one source at the last merge, to log changes once.
    clashes: Mutex<BTreeMap<String, Vec<String>>>,
    /// The current snapshot came from the snapshot file: it is served until every
    /// source has been read (a partial merge would drop flags it holds).
    preloaded: std::sync::atomic::AtomicBool,
    /// Static sync context sent with every stream message.
    pub context: Option<prost_types::Struct>,
    /// Source names in precedence order (later wins a flag-name clash).
    pub names: Vec<String>,
    /// The payload limit: a merged document larger than this is refused.
    max_bytes: usize,
    /// Why the newest merge was refused (the last good snapshot is still served).
    merge_refused: Mutex<Option<String>>,
    /// `source=` names asked for that no source has, logged once each (capped, so a
    /// client inventing names cannot grow it without bound).
    unknown_sources: Mutex<std::collections::HashSet<String>>,
    /// What each accepted document changed, and the last few documents (`/changes`).
    pub changes: crate::changes::History,
}

impl Hub {
    pub fn new(names: Vec<String>, context: Option<prost_types::Struct>) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Hub {
            tx,
            current: RwLock::new(None),
            retired: Mutex::new(std::collections::VecDeque::new()),
            publishing: Mutex::new(Sources {
                docs: vec![None; names.len()],
                settled: vec![false; names.len()],
                pending: false,
            }),
            clashes: Mutex::new(BTreeMap::new()),
            preloaded: Default::default(),
            context,
            names,
            max_bytes: crate::flags::DEFAULT_MAX_PAYLOAD_BYTES,
            merge_refused: Mutex::new(None),
            unknown_sources: Mutex::new(Default::default()),
            changes: Default::default(),
        }
    }

    /// Sets the payload limit the merged document must obey (`--max-payload-bytes`).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Whether this unknown source name is asked for the first time (remembers up to
    /// 1,000 names; past that, every new name counts as seen).
    pub fn first_unknown_source(&self, name: &str) -> bool {
        let mut seen = self.unknown_sources.lock().expect("hub lock poisoned");
        seen.len() < 1000 && seen.insert(name.to_string())
    }

    /// Why the newest merge of the sources was refused, if it was: the last good
    /// snapshot is still served.
    pub fn merge_refused(&self) -> Option<String> {
        self.merge_refused
            .lock()
            .expect("hub lock poisoned")
            .clone()
    }

    /// Publishes the only source's document (single-source services and tests).
    pub fn publish(&self, doc: Document) -> bool {
        !self.publish_sources(vec![(0, doc)], &[0]).is_empty()
    }

    /// Publishes new documents of some sources as one snapshot (so a batch of changes
    /// reaches clients as one message), and marks the sources in `read` settled (a read
    /// was tried). Sources whose content did not change are skipped; returns the indexes
    /// that changed. Nothing is announced if nothing changed, or while a source is not
    /// settled yet (see [`Hub::settle`]), or while the snapshot file is served and a
    /// source has no document.
    pub fn publish_sources(&self, updates: Vec<(usize, Document)>, read: &[usize]) -> Vec<usize> {
        self.announce_sources(updates, read).record(self)
    }

    /// [`Hub::publish_sources`] without the change history: the streams are woken, and
    /// the caller records the changes with [`Published::record`] once they had their
    /// turn. A task woken here waits in this worker's LIFO slot until the current task
    /// yields (tokio does not let another worker take it), so the comparison with the
    /// previous document and its log line would otherwise delay every stream.
    pub fn announce_sources(&self, updates: Vec<(usize, Document)>, read: &[usize]) -> Published {
        let mut state = self.publishing.lock().expect("hub lock poisoned");
        let mut changed = Vec::new();
        let mut records = Vec::new();
        for (i, doc) in updates {
            if state.docs[i]
                .as_ref()
                .is_some_and(|s| s.doc.digest == doc.digest)
            {
                continue;
            }
            let previous = state.docs[i].clone();
            let doc = Arc::new(doc);
            let view = doc_view(&doc, self.context.as_ref());
            state.docs[i] = Some(Arc::new(SourceDoc {
                doc: doc.clone(),
                view,
            }));
            records.push((i, previous, doc));
            changed.push(i);
        }
        state.pending |= !changed.is_empty();
        for &i in read {
            state.settled[i] = true;
        }
        self.announce_pending(&mut state);
        Published { changed, records }
    }

    /// Marks sources settled without a document (their watcher could not connect), so
    /// the other sources are served.
    pub fn settle(&self, indexes: &[usize]) {
        let mut state = self.publishing.lock().expect("hub lock poisoned");
        for &i in indexes {
            state.settled[i] = true;
        }
        self.announce_pending(&mut state);
    }

    fn announce_pending(&self, state: &mut Sources) {
        if !state.pending || state.settled.iter().any(|s| !s) {
            return;
        }
        use std::sync::atomic::Ordering::SeqCst;
        if self.preloaded.load(SeqCst) {
            if state.docs.iter().any(Option::is_none) {
                return;
            }
            self.preloaded.store(false, SeqCst);
        }
        let (doc, all) = if self.names.len() == 1 {
            let only = state.docs[0].as_ref().expect("pending means published");
            (only.doc.clone(), only.view.clone())
        } else {
            let merged = self.merge(&state.docs);
            let mut refused = self.merge_refused.lock().expect("hub lock poisoned");
            match merged {
                Ok(doc) => {
                    if refused.take().is_some() {
                        info!(
                            bytes = doc.canonical.len(),
                            "the merged document fits the payload limit again; serving it"
                        );
                    }
                    let doc = Arc::new(doc);
                    let view = doc_view(&doc, self.context.as_ref());
                    (doc, view)
                }
                Err(e) => {
                    let serving = self
                        .current()
                        .map_or_else(|| "none".into(), |s| s.doc.digest.short());
                    error!(error = %e, serving = %serving,
                        "merged flag document refused; clients keep the last good flags");
                    *refused = Some(e.to_string());
                    // Left pending: the next change of any source tries again.
                    return;
                }
            }
        };
        self.announce(Snapshot {
            doc,
            published_at: SystemTime::now(),
            all,
            sources: state.docs.clone(),
            filtered: Mutex::new(HashMap::new()),
        });
        state.pending = false;
    }

    /// Serves a document from the snapshot file until the sources are read.
    pub fn preload(&self, doc: Document) {
        let doc = Arc::new(doc);
        let all = doc_view(&doc, self.context.as_ref());
        self.announce(Snapshot {
            doc,
            published_at: SystemTime::now(),
            all,
            sources: vec![None; self.names.len()],
            filtered: Mutex::new(HashMap::new()),
        });
        self.preloaded
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether every source has a document.
    pub fn complete(&self) -> bool {
        self.publishing
            .lock()
            .expect("hub lock poisoned")
            .docs
            .iter()
            .all(Option::is_some)
    }

    /// Readiness as far as flags go: every source is loaded, or the snapshot file is
    /// served until they are.
    pub fn ready(&self) -> bool {
        self.current().is_some()
            && (self.complete() || self.preloaded.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn announce(&self, snap: Snapshot) {
        let snap = Arc::new(snap);
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
    }

    /// Merges the loaded sources: a later source's flag (or evaluator) replaces an
    /// earlier one of the same name, as flagd does. Each flag carries its source's
    /// document-level metadata (flagSetId…) in its own metadata (its own keys win), as
    /// flagd's store does (`patchMetadata`), so `flagSetId` selectors work on the merged
    /// document. That copy multiplies a source's metadata by its number of flags, so the
    /// merged size is counted while it is built, winners only (sources walked from the
    /// last), and the merge stops as soon as it passes the payload limit: nothing much
    /// larger than the limit is ever built.
    fn merge(&self, sources: &[Option<Arc<SourceDoc>>]) -> Result<Document, MergeError> {
        let mut flags = Map::new();
        let mut evaluators = Map::new();
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // `{"flags":{}}` plus `,"$evaluators":{}`: the frame around the members.
        let mut size = 29;
        let too_large = |size: usize| MergeError::TooLarge {
            at_least: size,
            limit: self.max_bytes,
            sources: describe_sources(&self.names, sources),
        };
        for (name, source) in self.names.iter().zip(sources).rev() {
            let Some(source) = source else { continue };
            let value = &source.doc.value();
            let set_meta = value.get("metadata").and_then(Value::as_object);
            for (key, flag) in value
                .get("flags")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                owners.entry(key.clone()).or_default().push(name.clone());
                if flags.contains_key(key) {
                    continue;
                }
                let flag = with_set_metadata(flag, set_meta);
                size += json_len(key) + json_len(&flag) + 2;
                if size > self.max_bytes {
                    return Err(too_large(size));
                }
                flags.insert(key.clone(), flag);
            }
            for (k, v) in value
                .get("$evaluators")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if !evaluators.contains_key(k) {
                    size += json_len(k) + json_len(v) + 2;
                    if size > self.max_bytes {
                        return Err(too_large(size));
                    }
                    evaluators.insert(k.clone(), v.clone());
                }
            }
        }
        owners.retain(|_, names| names.len() > 1);
        // Walked from the last source: put the names back in precedence order.
        owners.values_mut().for_each(|names| names.reverse());
        self.log_clashes(owners);
        let mut out = Map::new();
        out.insert("flags".into(), Value::Object(flags));
        if !evaluators.is_empty() {
            out.insert("$evaluators".into(), Value::Object(evaluators));
        }
        let doc = Document::from_value(Value::Object(out));
        if doc.canonical.len() > self.max_bytes {
            return Err(too_large(doc.canonical.len()));
        }
        Ok(doc)
    }

    /// Logs flag names that became (or stopped being) defined by several sources.
    fn log_clashes(&self, now: BTreeMap<String, Vec<String>>) {
        let mut before = self.clashes.lock().expect("hub lock poisoned");
        for (flag, names) in &now {
            if before.get(flag) != Some(names) {
                warn!(flag = %flag, sources = ?names, served_from = %names.last().expect("two or more"),
                    "flag defined by several sources; the last source's definition is served (later sources win, as in flagd)");
            }
        }
        for flag in before.keys() {
            if !now.contains_key(flag) {
                info!(flag = %flag, "flag no longer defined by several sources");
            }
        }
        *before = now;
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

    fn doc_with(json: &str) -> Document {
        parse(json.as_bytes(), &Options::default()).unwrap()
    }

    fn doc(v: &str) -> Document {
        flag_doc("f", v, "")
    }

    fn flag_doc(name: &str, v: &str, set: &str) -> Document {
        let meta = if set.is_empty() {
            String::new()
        } else {
            format!(r#","metadata":{{"flagSetId":"{set}"}}"#)
        };
        doc_with(&format!(
            r#"{{"flags":{{"{name}":{{"state":"ENABLED","variants":{{"v":"{v}"}},"defaultVariant":"v"}}}}{meta}}}"#
        ))
    }

    fn flag_names(view: &View) -> Vec<String> {
        let v: Value = serde_json::from_str(&view.json).unwrap();
        v["flags"].as_object().unwrap().keys().cloned().collect()
    }

    fn one() -> Hub {
        Hub::new(vec!["flags".into()], None)
    }

    #[test]
    fn identical_content_is_published_once() {
        let hub = one();
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
        let hub = one();
        let mut rx = hub.subscribe();
        for i in 0..(BROADCAST_CAPACITY * 3) {
            hub.publish(doc(&i.to_string()));
        }
        let last = doc(&(BROADCAST_CAPACITY * 3 - 1).to_string());
        assert_eq!(Hub::newest(&mut rx).await.unwrap().doc.digest, last.digest);
    }

    #[test]
    fn views_are_shared_per_selector() {
        let hub = one();
        hub.publish(doc("a"));
        let snap = hub.current().unwrap();
        let sel = Selector::FlagSet(None);
        let a = snap.view(&hub, &sel);
        let b = snap.view(&hub, &sel);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&snap.view(&hub, &Selector::All), &snap.all));
        assert!(Arc::ptr_eq(
            &snap.view(&hub, &Selector::Source("flags".into())),
            &snap.all
        ));
        // The single source's document is served as is: its digest is the document's.
        assert_eq!(snap.all.digest, doc("a").digest);
    }

    #[test]
    fn sources_merge_in_order_and_select_by_source_and_set() {
        let hub = Hub::new(vec!["a".into(), "b".into()], None);
        let changed = hub.publish_sources(
            vec![
            (0, doc_with(r#"{"flags":{"x":{"state":"ENABLED","variants":{"v":"from-a"},"defaultVariant":"v"},
                "only-a":{"state":"ENABLED","variants":{"v":1},"defaultVariant":"v"}},
                "metadata":{"flagSetId":"team-a"}}"#)),
            (1, flag_doc("x", "from-b", "team-b")),
        ], &[0, 1]);
        assert_eq!(changed, [0, 1]);
        assert!(hub.complete());
        let snap = hub.current().unwrap();
        let merged: Value = serde_json::from_str(&snap.all.json).unwrap();
        // The later source wins the clash; set-level metadata moved onto each flag.
        assert_eq!(merged["flags"]["x"]["variants"]["v"], "from-b");
        assert_eq!(merged["flags"]["only-a"]["metadata"]["flagSetId"], "team-a");
        assert_eq!(
            flag_names(&snap.view(&hub, &Selector::Source("a".into()))),
            ["only-a", "x"]
        );
        assert_eq!(
            flag_names(&snap.view(&hub, &Selector::Source("b".into()))),
            ["x"]
        );
        assert!(flag_names(&snap.view(&hub, &Selector::Source("nope".into()))).is_empty());
        assert_eq!(
            flag_names(&snap.view(&hub, &Selector::FlagSet(Some("team-a".into())))),
            ["only-a"]
        );
        assert_eq!(
            flag_names(&snap.view(&hub, &Selector::FlagSet(Some("team-b".into())))),
            ["x"]
        );
    }

    #[test]
    fn a_change_in_one_source_keeps_the_other_sources_view() {
        let hub = Hub::new(vec!["a".into(), "b".into()], None);
        hub.publish_sources(
            vec![(0, flag_doc("x", "1", "")), (1, flag_doc("y", "1", ""))],
            &[0, 1],
        );
        let before = hub.current().unwrap();
        assert!(hub.complete());
        assert_eq!(
            hub.publish_sources(vec![(1, flag_doc("y", "2", ""))], &[1]),
            [1]
        );
        let after = hub.current().unwrap();
        let a = Selector::Source("a".into());
        let b = Selector::Source("b".into());
        assert!(Arc::ptr_eq(&before.view(&hub, &a), &after.view(&hub, &a)));
        assert_ne!(before.view(&hub, &b).digest, after.view(&hub, &b).digest);
        assert_ne!(before.all.digest, after.all.digest);
        // Same content again: nothing is announced.
        assert!(hub
            .publish_sources(vec![(1, flag_doc("y", "2", ""))], &[1])
            .is_empty());
    }

    #[test]
    fn a_merge_over_the_limit_is_refused_before_it_is_built_and_the_last_good_kept() {
        let hub = Hub::new(vec!["a".into(), "b".into()], None).with_max_bytes(4000);
        hub.publish_sources(vec![(0, doc("1")), (1, flag_doc("y", "1", "s"))], &[0, 1]);
        let good = hub.current().unwrap().all.digest;
        assert!(hub.merge_refused().is_none());
        // 40 flags of ~70 bytes fit; with 100 bytes of set metadata copied into each,
        // the merge would be over 6 KB.
        let flags: Vec<String> = (0..40)
            .map(|i| {
                format!(r#""f{i}":{{"state":"ENABLED","variants":{{"v":1}},"defaultVariant":"v"}}"#)
            })
            .collect();
        let big = doc_with(&format!(
            r#"{{"flags":{{{}}},"metadata":{{"n":"{}"}}}}"#,
            flags.join(","),
            "x".repeat(100)
        ));
        assert!(big.canonical.len() < 4000);
        assert_eq!(hub.publish_sources(vec![(1, big)], &[1]), [1]);
        assert_eq!(
            hub.current().unwrap().all.digest,
            good,
            "the last good is kept"
        );
        let why = hub.merge_refused().unwrap();
        assert!(why.contains("above the limit of 4000 bytes"), "{why}");
        assert!(why.contains("b (") && why.contains("40 flags"), "{why}");
        // Counting stops at the limit: the size named is just past it, not the full 6 KB.
        let MergeError::TooLarge { at_least, .. } =
            hub.merge(&hub.publishing.lock().unwrap().docs).unwrap_err();
        assert!((4000..4400).contains(&at_least), "{at_least}");
        // A change that fits is served again.
        hub.publish_sources(vec![(1, flag_doc("y", "2", "s"))], &[1]);
        assert!(hub.merge_refused().is_none());
        assert_ne!(hub.current().unwrap().all.digest, good);
    }

    #[test]
    fn nothing_is_announced_before_every_source_was_tried_and_readiness_needs_them_all() {
        let hub = Hub::new(vec!["a".into(), "b".into()], None);
        // Source a is read; b's watcher has not tried yet: no partial first set.
        hub.publish_sources(vec![(0, doc("1"))], &[0]);
        assert!(hub.current().is_none());
        // b's key turned out missing (tried, no document): a is served, not ready.
        hub.publish_sources(vec![], &[1]);
        assert_eq!(flag_names(&hub.current().unwrap().all), ["f"]);
        assert!(!hub.complete() && !hub.ready());
        // A watcher that cannot connect at all settles its sources too.
        let hub = Hub::new(vec!["a".into(), "b".into()], None);
        hub.publish_sources(vec![(0, doc("1"))], &[0]);
        hub.settle(&[1]);
        assert_eq!(flag_names(&hub.current().unwrap().all), ["f"]);
    }
}
