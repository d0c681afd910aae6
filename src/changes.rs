//! What changed: for each accepted document, the flags added, removed and changed against
//! the source's previous document; the last [`MAX_PUBLISHES`] such records, and the last
//! [`MAX_DOCUMENTS`] distinct documents (at most [`MAX_DOCUMENT_BYTES`] in all) so that
//! one can be put back (`put --restore`).
//!
//! Pure bookkeeping below the hub: it knows flag documents and nothing of Redis, streams
//! or HTTP. The work is per accepted document (a comparison of two flag maps), never per
//! stream.

use crate::flags::{Digest, Document};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::info;

/// Publishes remembered for `GET /changes`.
pub const MAX_PUBLISHES: usize = 50;
/// Distinct documents remembered for `GET /changes/{digest}`.
pub const MAX_DOCUMENTS: usize = 20;
/// The remembered documents' canonical JSON, in all (the newest is always kept).
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024 * 1024;
/// Flag names listed per kind of change (the count is always exact).
pub const MAX_NAMES: usize = 20;

/// Some flag names (sorted, at most [`MAX_NAMES`]) and how many there are.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Names {
    pub count: usize,
    pub names: Vec<String>,
}

impl Names {
    fn from(mut all: Vec<String>) -> Self {
        all.sort();
        let count = all.len();
        all.truncate(MAX_NAMES);
        Names { count, names: all }
    }
}

/// Flags added, removed and changed from one document to the next.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Diff {
    pub added: Names,
    pub removed: Names,
    pub changed: Names,
}

/// A canonical document's flags, each as its canonical JSON text (borrowed; no tree is
/// built: a change to a 1 MB document is compared in one pass over each document). In
/// canonical form, equal content is equal text.
fn flags(canonical: &str) -> BTreeMap<String, &RawValue> {
    #[derive(serde::Deserialize)]
    struct Flags<'a> {
        #[serde(borrow)]
        flags: BTreeMap<String, &'a RawValue>,
    }
    serde_json::from_str::<Flags>(canonical)
        .map(|f| f.flags)
        .unwrap_or_default()
}

/// Compares the `flags` of two canonical documents (no previous document: every flag is
/// added).
pub fn diff(previous: Option<&str>, next: &str) -> Diff {
    let before = previous.map(flags).unwrap_or_default();
    let after = flags(next);
    let added = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect();
    let removed = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    let changed = after
        .iter()
        .filter(|(k, v)| before.get(*k).is_some_and(|b| b.get() != v.get()))
        .map(|(k, _)| k.clone())
        .collect();
    Diff {
        added: Names::from(added),
        removed: Names::from(removed),
        changed: Names::from(changed),
    }
}

/// One accepted document of one source.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Unix seconds.
    pub at: f64,
    pub source: String,
    /// The source document's digest (as `put` prints it).
    pub digest: String,
    pub previous: Option<String>,
    pub flags: usize,
    pub bytes: usize,
    #[serde(flatten)]
    pub diff: Diff,
}

/// A remembered document.
#[derive(Clone, Debug)]
pub struct Stored {
    pub digest: Digest,
    pub source: String,
    pub json: Arc<str>,
}

#[derive(Debug, Default)]
struct Inner {
    publishes: VecDeque<Change>,
    documents: VecDeque<Stored>,
    bytes: usize,
}

/// The change history.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    /// Records an accepted document of `source` (replacing `previous`) and logs what
    /// changed.
    pub fn record(&self, source: &str, previous: Option<&Document>, next: &Document) {
        let diff = diff(previous.map(|d| d.canonical.as_str()), &next.canonical);
        info!(
            source = %source,
            digest = %next.digest.short(),
            previous = %previous.map_or_else(|| "none".to_string(), |p| p.digest.short()),
            added = diff.added.count,
            removed = diff.removed.count,
            changed = diff.changed.count,
            added_flags = ?diff.added.names,
            removed_flags = ?diff.removed.names,
            changed_flags = ?diff.changed.names,
            "flags changed"
        );
        let change = Change {
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            source: source.to_string(),
            digest: next.digest.to_string(),
            previous: previous.map(|p| p.digest.to_string()),
            flags: next.flag_count,
            bytes: next.canonical.len(),
            diff,
        };
        let mut inner = self.inner.lock().expect("change history poisoned");
        inner.publishes.push_back(change);
        while inner.publishes.len() > MAX_PUBLISHES {
            inner.publishes.pop_front();
        }
        // The newest copy of a document moves to the back.
        if let Some(at) = inner.documents.iter().position(|d| d.digest == next.digest) {
            let old = inner.documents.remove(at).expect("found");
            inner.bytes -= old.json.len();
        }
        inner.bytes += next.canonical.len();
        inner.documents.push_back(Stored {
            digest: next.digest,
            source: source.to_string(),
            json: next.canonical.as_str().into(),
        });
        while inner.documents.len() > 1
            && (inner.documents.len() > MAX_DOCUMENTS || inner.bytes > MAX_DOCUMENT_BYTES)
        {
            let old = inner.documents.pop_front().expect("more than one");
            inner.bytes -= old.json.len();
        }
    }

    /// The remembered publishes, newest first.
    pub fn changes(&self) -> Vec<Change> {
        let inner = self.inner.lock().expect("change history poisoned");
        inner.publishes.iter().rev().cloned().collect()
    }

    /// The remembered document whose digest is `hex` or starts with it (at least 12 hex
    /// digits); `Err` lists how many matched when not exactly one.
    pub fn document(&self, hex: &str) -> Result<Stored, usize> {
        let hex = hex.to_ascii_lowercase();
        if hex.len() < 12 {
            return Err(0);
        }
        let inner = self.inner.lock().expect("change history poisoned");
        let found: Vec<&Stored> = inner
            .documents
            .iter()
            .filter(|d| d.digest.to_string().starts_with(&hex))
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            many => Err(many.len()),
        }
    }

    /// The remembered documents' digests and sources, newest first.
    pub fn documents(&self) -> Vec<(String, String, usize)> {
        let inner = self.inner.lock().expect("change history poisoned");
        inner
            .documents
            .iter()
            .rev()
            .map(|d| (d.digest.to_string(), d.source.clone(), d.json.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{parse, Options};

    fn doc(flags: &[(&str, &str)]) -> Document {
        let body: Vec<String> = flags
            .iter()
            .map(|(n, v)| {
                format!(
                    r#""{n}":{{"state":"ENABLED","variants":{{"v":"{v}"}},"defaultVariant":"v"}}"#
                )
            })
            .collect();
        parse(
            format!(r#"{{"flags":{{{}}}}}"#, body.join(",")).as_bytes(),
            &Options::default(),
        )
        .unwrap()
    }

    #[test]
    fn names_exactly_the_flags_added_removed_and_changed() {
        let a = doc(&[("keep", "1"), ("change", "1"), ("drop", "1")]);
        let b = doc(&[("keep", "1"), ("change", "2"), ("new", "1")]);
        let d = diff(Some(&a.canonical), &b.canonical);
        assert_eq!(d.added.names, ["new"]);
        assert_eq!(d.removed.names, ["drop"]);
        assert_eq!(d.changed.names, ["change"]);
        let first = diff(None, &a.canonical);
        assert_eq!(first.added.count, 3);
        assert_eq!(first.changed.count, 0);
    }

    #[test]
    fn names_are_capped_with_exact_counts() {
        let many: Vec<(String, String)> = (0..MAX_NAMES + 5)
            .map(|i| (format!("f{i:03}"), "1".to_string()))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let d = diff(None, &doc(&refs).canonical);
        assert_eq!(d.added.count, MAX_NAMES + 5);
        assert_eq!(d.added.names.len(), MAX_NAMES);
        assert_eq!(d.added.names[0], "f000");
    }

    #[test]
    fn history_is_bounded_and_finds_documents_by_digest_prefix() {
        let h = History::default();
        let mut prev: Option<Document> = None;
        let mut digests = Vec::new();
        for i in 0..(MAX_PUBLISHES + 3) {
            let next = doc(&[("f", &i.to_string())]);
            h.record("flags", prev.as_ref(), &next);
            digests.push(next.digest);
            prev = Some(next);
        }
        assert_eq!(h.changes().len(), MAX_PUBLISHES);
        assert_eq!(h.documents().len(), MAX_DOCUMENTS);
        let newest = digests.last().unwrap().to_string();
        assert_eq!(h.changes()[0].digest, newest);
        assert_eq!(
            h.document(&newest[..12]).unwrap().digest.to_string(),
            newest
        );
        // Forgotten: older than the last MAX_DOCUMENTS.
        assert_eq!(h.document(&digests[0].to_string()).unwrap_err(), 0);
        // Too short a prefix is refused.
        assert!(h.document(&newest[..4]).is_err());
    }
}
