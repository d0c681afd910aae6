//! What changed: for each accepted document, the flags added, removed and changed against
//! the source's previous document; the last [`MAX_PUBLISHES`] such records, and the last
//! [`MAX_DOCUMENTS`] distinct documents (at most [`MAX_DOCUMENT_BYTES`] kept in all) so
//! that one can be put back (`put --restore`).
//!
//! Pure bookkeeping below the hub: it knows flag documents and nothing of Redis, streams
//! or HTTP. The work is per accepted document, never per stream: the names come from the
//! memo's comparison when it made the document (see `flags::FlagChanges`), else from a
//! comparison of the two flag maps.
//!
//! Memory: the newest document of each source is the one served (shared, not copied);
//! an older one is kept as the bytes where it differs from the next newer document of
//! its source (their common beginning and end are not stored). One flag changed in a
//! 1 MB document keeps that flag's few hundred bytes, not another megabyte.

use crate::flags::{common_prefix, common_suffix, Digest, Document, FlagChanges};
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
/// The bytes the remembered documents keep, in all: each source's newest whole (it is the
/// one served), the others as their differences (the newest is always kept).
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;
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
    pub json: Arc<String>,
}

/// How a remembered document is kept.
#[derive(Debug)]
enum Body {
    /// The newest of its source: the document served.
    Whole(Arc<String>),
    /// The next newer document of the same source with its bytes from `prefix` to
    /// `len - suffix` replaced by `middle`.
    Delta {
        prefix: usize,
        middle: Box<[u8]>,
        suffix: usize,
    },
}

impl Body {
    /// The bytes this entry keeps of its own.
    fn kept(&self) -> usize {
        match self {
            Body::Whole(t) => t.len(),
            Body::Delta { middle, .. } => middle.len(),
        }
    }

    /// `old` as a difference from `new`: their common beginning and end are not kept.
    fn delta(old: &[u8], new: &[u8]) -> Body {
        let prefix = common_prefix(old, new);
        let suffix = common_suffix(old, new, old.len().min(new.len()) - prefix);
        Body::Delta {
            prefix,
            middle: old[prefix..old.len() - suffix].into(),
            suffix,
        }
    }

    /// The document this entry is, given the next newer one of its source (`None`: it is
    /// whole).
    fn apply(&self, newer: Option<&[u8]>) -> Vec<u8> {
        match (self, newer) {
            (Body::Whole(t), _) => t.as_bytes().to_vec(),
            (
                Body::Delta {
                    prefix,
                    middle,
                    suffix,
                },
                Some(n),
            ) => [&n[..*prefix], middle, &n[n.len() - suffix..]].concat(),
            (Body::Delta { .. }, None) => unreachable!("a difference always has a newer document"),
        }
    }
}

#[derive(Debug)]
struct Entry {
    digest: Digest,
    source: String,
    /// The document's length.
    len: usize,
    body: Body,
}

#[derive(Debug, Default)]
struct Inner {
    publishes: VecDeque<Change>,
    /// Oldest first; each source's newest entry is [`Body::Whole`], each older one a
    /// difference from the next newer entry of the same source.
    documents: VecDeque<Entry>,
    /// What the entries keep, in all.
    bytes: usize,
}

impl Inner {
    /// The position of the next newer entry of the same source as `at`.
    fn newer(&self, at: usize) -> Option<usize> {
        let source = &self.documents[at].source;
        (at + 1..self.documents.len()).find(|&i| self.documents[i].source == *source)
    }

    /// The document at `at`, rebuilt from the newest of its source.
    fn text(&self, at: usize) -> Vec<u8> {
        let mut chain = vec![at];
        let mut cur = at;
        while matches!(self.documents[cur].body, Body::Delta { .. }) {
            cur = self
                .newer(cur)
                .expect("a difference has a newer document of its source");
            chain.push(cur);
        }
        let mut text: Option<Vec<u8>> = None;
        for &i in chain.iter().rev() {
            text = Some(self.documents[i].body.apply(text.as_deref()));
        }
        text.expect("at least one entry")
    }

    fn set_body(&mut self, at: usize, body: Body) {
        self.bytes -= self.documents[at].body.kept();
        self.bytes += body.kept();
        self.documents[at].body = body;
    }

    /// Forgets the entry at `at`; the older entry of its source that was kept as a
    /// difference from it is kept as a difference from the entry after it instead (or
    /// whole, when it becomes its source's newest).
    fn remove(&mut self, at: usize) {
        let source = self.documents[at].source.clone();
        let older = (0..at).rev().find(|&i| self.documents[i].source == source);
        let rebased = older.map(|o| {
            let text = self.text(o);
            let body = match self.newer(at) {
                Some(n) => Body::delta(&text, &self.text(n)),
                None => Body::Whole(Arc::new(
                    String::from_utf8(text).expect("documents are UTF-8"),
                )),
            };
            (o, body)
        });
        if let Some((o, body)) = rebased {
            self.set_body(o, body);
        }
        let gone = self.documents.remove(at).expect("in range");
        self.bytes -= gone.body.kept();
    }

    /// Adds the newest document of `source`; the previous newest of that source becomes
    /// a difference from it.
    fn push(&mut self, digest: Digest, source: &str, json: Arc<String>) {
        if let Some(last) = (0..self.documents.len())
            .rev()
            .find(|&i| self.documents[i].source == source)
        {
            if let Body::Whole(old) = &self.documents[last].body {
                let body = Body::delta(old.as_bytes(), json.as_bytes());
                self.set_body(last, body);
            }
        }
        self.bytes += json.len();
        self.documents.push_back(Entry {
            digest,
            source: source.to_string(),
            len: json.len(),
            body: Body::Whole(json),
        });
    }
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
        let diff = match (&next.changes, previous) {
            (Some(c), Some(p)) if c.since == p.digest => Diff::from(c),
            _ => diff(previous.map(|d| d.canonical.as_str()), &next.canonical),
        };
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
            inner.remove(at);
        }
        inner.push(next.digest, source, next.canonical.clone());
        // The oldest entry is never another's base: forgetting it changes no other.
        while inner.documents.len() > 1
            && (inner.documents.len() > MAX_DOCUMENTS || inner.bytes > MAX_DOCUMENT_BYTES)
        {
            let old = inner.documents.pop_front().expect("more than one");
            inner.bytes -= old.body.kept();
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
        let found: Vec<usize> = (0..inner.documents.len())
            .filter(|&i| inner.documents[i].digest.to_string().starts_with(&hex))
            .collect();
        match found.as_slice() {
            [one] => {
                let e = &inner.documents[*one];
                let json = match &e.body {
                    Body::Whole(t) => t.clone(),
                    Body::Delta { .. } => {
                        Arc::new(String::from_utf8(inner.text(*one)).expect("documents are UTF-8"))
                    }
                };
                Ok(Stored {
                    digest: e.digest,
                    source: e.source.clone(),
                    json,
                })
            }
            many => Err(many.len()),
        }
    }

    /// The remembered documents' digests, sources and sizes, newest first.
    pub fn documents(&self) -> Vec<(String, String, usize)> {
        let inner = self.inner.lock().expect("change history poisoned");
        inner
            .documents
            .iter()
            .rev()
            .map(|d| (d.digest.to_string(), d.source.clone(), d.len))
            .collect()
    }

    /// The bytes the remembered documents keep (the newest of each source included).
    pub fn kept_bytes(&self) -> usize {
        self.inner.lock().expect("change history poisoned").bytes
    }
}

impl From<&FlagChanges> for Diff {
    fn from(c: &FlagChanges) -> Self {
        Diff {
            added: Names::from(c.added.clone()),
            removed: Names::from(c.removed.clone()),
            changed: Names::from(c.changed.clone()),
        }
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

    /// A document of `n` flags with flag `f{change}` set to `v`.
    fn big(n: usize, change: usize, v: &str) -> Document {
        let flags: Vec<(String, String)> = (0..n)
            .map(|i| {
                let v = if i == change {
                    v.to_string()
                } else {
                    "1".into()
                };
                (format!("f{i:04}"), v)
            })
            .collect();
        let refs: Vec<(&str, &str)> = flags
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        doc(&refs)
    }

    #[test]
    fn a_difference_gives_back_the_old_bytes() {
        let long = |mid: &str| format!("{}{mid}{}", "x".repeat(700), "y".repeat(900));
        let cases = [
            (String::new(), String::new()),
            ("abc".into(), "abc".into()),
            ("abc".into(), String::new()),
            (String::new(), "abc".into()),
            ("aaaa".into(), "aaaaaa".into()),
            ("aaaaaa".into(), "aaaa".into()),
            (long("a"), long("bb")),
            (long(""), long("z")),
            ("x".repeat(1000), "y".repeat(1000)),
        ];
        for (old, new) in cases {
            let d = Body::delta(old.as_bytes(), new.as_bytes());
            assert_eq!(
                d.apply(Some(new.as_bytes())),
                old.as_bytes(),
                "{old:?} {new:?}"
            );
        }
        assert_eq!(
            Body::delta(long("a").as_bytes(), long("bb").as_bytes()).kept(),
            1
        );
    }

    #[test]
    fn the_memos_names_are_those_of_comparing_the_documents() {
        let text = |flags: &[(&str, &str)]| {
            let body: Vec<String> = flags
                .iter()
                .map(|(n, v)| format!(r#""{n}":{{"variants":{{"v":"{v}"}},"state":"ENABLED"}}"#))
                .collect();
            format!(r#"{{"flags":{{{}}}}}"#, body.join(","))
        };
        let mut memo = crate::flags::Memo::new(Options::default());
        let a = memo
            .parse(text(&[("keep", "1"), ("change", "1"), ("drop", "1")]).as_bytes())
            .unwrap();
        let b = memo
            .parse(text(&[("new", "1"), ("change", "2"), ("keep", "1")]).as_bytes())
            .unwrap();
        let from_memo = Diff::from(b.changes.as_ref().unwrap());
        assert_eq!(from_memo, diff(Some(&a.canonical), &b.canonical));
        assert_eq!(from_memo.changed.names, ["change"]);
    }

    #[test]
    fn older_documents_are_kept_as_differences_and_rebuilt_exactly() {
        let h = History::default();
        let mut all: Vec<(&str, Document)> = Vec::new();
        let mut last: [Option<Document>; 2] = [None, None];
        // Two sources interleaved, one flag changed per document.
        for i in 0..12 {
            let (k, source) = if i % 3 == 2 { (1, "b") } else { (0, "a") };
            let next = big(200, 100 + i % 2, &format!("v{i}"));
            h.record(source, last[k].as_ref(), &next);
            last[k] = Some(next.clone());
            all.push((source, next));
        }
        let whole = all[0].1.canonical.len();
        // Two sources' newest whole; ten differences of one flag each.
        assert!(h.kept_bytes() < 2 * whole + 10 * 200, "{}", h.kept_bytes());
        let check = |all: &[(&str, Document)]| {
            for (source, d) in all {
                let got = h.document(&d.digest.to_string()).unwrap();
                assert_eq!(got.json, d.canonical, "{}", d.digest);
                assert_eq!(got.source, *source);
            }
        };
        check(&all);
        // An older document of `a` comes back: it moves to the back, and the documents
        // that were kept as differences from it are rebuilt from the others.
        let back = all[3].1.clone();
        h.record("a", last[0].as_ref(), &back);
        check(&all);
        assert_eq!(h.documents().len(), all.len());
        assert_eq!(h.documents()[0].0, back.digest.to_string());
        assert_eq!(h.documents()[0].2, back.canonical.len());
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
