//! Per-flag memoisation of [`super::parse`] for a watcher that reads the same key again
//! and again: a change to one flag of a 2,500-flag document re-validates that one flag.
//!
//! The document is split into its top-level members and its flags without building a
//! tree (`serde_json::value::RawValue` borrows each flag's bytes). A flag whose name and
//! bytes are those of the previous document reuses its validated, canonical piece; only
//! the other flags are parsed, shape-checked, strictly checked and canonicalised. The
//! document-level parts (metadata, `$evaluators` and the references between shared rules)
//! are small and checked at every read. A flag's result depends on the flag and on the
//! shared rules (the `$ref`s it may use), so the cache is emptied when `$evaluators`
//! changes. The canonical document is assembled from the pieces in key order (what
//! serialising the whole tree gives) and the digest taken over those bytes.
//!
//! Anything unusual (not a JSON object, the array form of `flags`, a nesting close to
//! serde_json's depth limit, a problem in any part, a result over the size limit) falls
//! back to [`super::parse`] on the whole document, so refusals, their pointers and the
//! warnings of `--validation basic` are exactly those of a validation from scratch; the
//! property test below checks that the two agree byte for byte.
//!
//! Memory: the cache holds the current document's flags only (each flag's raw bytes and
//! canonical piece, about twice the document), replaced at every accepted read.

use super::problem::{Problems, Seg};
use super::{parse, shape, strict, Digest, Document, DocumentError, Options};
use serde::de::{Deserialize, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// serde_json refuses nesting deeper than 128; a part this deep is judged by the whole
/// document's parse, where its depth counts from the top.
const MAX_PART_DEPTH: usize = 100;

/// Counts of the work done, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoStats {
    /// Flags parsed and validated (not found in the cache).
    pub validated: u64,
    /// Flags whose cached piece was reused.
    pub reused: u64,
    /// Documents judged whole by [`super::parse`] (the fallback).
    pub whole: u64,
}

/// One flag's validated, canonical form, and the bytes it came from.
struct Piece {
    raw: Box<str>,
    canonical: Box<str>,
}

/// A [`super::parse`] that remembers the flags of the last accepted document.
pub struct Memo {
    opts: Options,
    /// The canonical `$evaluators` the cached flags were checked with.
    evaluators: Option<String>,
    /// The last accepted document's flags, by name.
    flags: HashMap<String, Piece>,
    pub stats: MemoStats,
}

impl Memo {
    pub fn new(opts: Options) -> Self {
        Memo {
            opts,
            evaluators: None,
            flags: HashMap::new(),
            stats: MemoStats::default(),
        }
    }

    /// The same result as [`super::parse`] with this memo's options.
    pub fn parse(&mut self, bytes: &[u8]) -> Result<Document, DocumentError> {
        if let Some(doc) = self.fast(bytes) {
            return Ok(doc);
        }
        self.stats.whole += 1;
        parse(bytes, &self.opts)
    }

    /// The same result as [`super::parse_hash`].
    pub fn parse_hash(&mut self, fields: &[u8]) -> Result<Document, DocumentError> {
        let bytes = super::hash_document(fields)?;
        self.parse(&bytes)
    }

    /// The document, if every part of it is valid and usual; `None`: judge it whole.
    fn fast(&mut self, bytes: &[u8]) -> Option<Document> {
        if bytes.len() > self.opts.max_bytes {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let Split { top, flags } = serde_json::from_str(text).ok()?;
        let flags = flags?;

        // The document without its flags: shape and strict checks of the shared parts.
        let mut skeleton = Map::new();
        for (k, raw) in top {
            if super::duplicate_member(raw.get()).is_some() {
                return None;
            }
            let v: Value = serde_json::from_str(raw.get()).ok()?;
            if depth(&v) > MAX_PART_DEPTH {
                return None;
            }
            skeleton.insert(k, v);
        }
        skeleton.insert("flags".into(), Value::Object(Map::new()));
        let skeleton = Value::Object(skeleton);
        shape::check(&skeleton).ok()?;
        let top_map = skeleton.as_object().expect("built as an object");
        let mut problems = Problems::default();
        let prepared = strict::prepare(top_map, &mut problems);
        if !problems.is_empty() {
            return None;
        }
        let evaluators = top_map
            .get("$evaluators")
            .map(|e| serde_json::to_string(e).expect("a Value always serialises"));
        let same_rules = evaluators == self.evaluators;
        let mut old = if same_rules {
            std::mem::take(&mut self.flags)
        } else {
            HashMap::new()
        };

        let mut pieces: Vec<(String, Piece)> = Vec::with_capacity(flags.len());
        for (name, raw) in flags {
            let raw = raw.get();
            // A changed flag's old piece stays in `old` until the document is accepted:
            // if it is refused, the cache still holds the last good flags.
            let hit = old.get(&name).is_some_and(|p| &*p.raw == raw);
            let piece = match hit.then(|| old.remove(&name)).flatten() {
                Some(p) => {
                    self.stats.reused += 1;
                    p
                }
                None => {
                    self.stats.validated += 1;
                    match self.flag(&prepared, &name, raw) {
                        Some(p) => p,
                        None => {
                            // Keep what was cached for the next document.
                            self.restore(same_rules, old, pieces);
                            return None;
                        }
                    }
                }
            };
            pieces.push((name, piece));
        }

        let canonical = assemble(top_map, &pieces, bytes.len());
        if canonical.len() > self.opts.max_bytes {
            self.restore(same_rules, old, pieces);
            return None;
        }
        self.evaluators = evaluators;
        let flag_count = pieces.len();
        self.flags = pieces.into_iter().collect();
        Some(Document {
            digest: Digest::of(canonical.as_bytes()),
            canonical,
            flag_count,
            warnings: Problems::default(),
        })
    }

    /// Parses, checks and canonicalises one flag; `None` if anything is wrong with it.
    fn flag(&self, prepared: &strict::Prepared<'_>, name: &str, raw: &str) -> Option<Piece> {
        if name.is_empty() {
            return None;
        }
        let mut value: Value = serde_json::from_str(raw).ok()?;
        if super::duplicate_member(raw).is_some() {
            return None;
        }
        if depth(&value) > MAX_PART_DEPTH {
            return None;
        }
        shape::check_flag(&value, &format!("/flags/{}", super::token(name))).ok()?;
        let mut problems = Problems::default();
        strict::flag(prepared, name, Seg::Key(name), &value, false, &mut problems);
        if !problems.is_empty() {
            return None;
        }
        if self.opts.normalize {
            shape::strip(&mut value);
        }
        Some(Piece {
            raw: raw.into(),
            canonical: serde_json::to_string(&value)
                .expect("a Value always serialises")
                .into(),
        })
    }

    /// After a fallback: the cache keeps the flags it had, and those just validated if
    /// they were checked with the same shared rules (pieces checked with other rules
    /// would be wrong for the cached ones).
    fn restore(
        &mut self,
        same_rules: bool,
        old: HashMap<String, Piece>,
        pieces: Vec<(String, Piece)>,
    ) {
        if same_rules {
            self.flags = old;
            self.flags.extend(pieces);
        }
    }
}

/// A document split in one pass: its flags (the map form) and its other members, each as
/// borrowed raw JSON. `flags` is `None` when the member is not a JSON object (or absent).
struct Split<'a> {
    top: BTreeMap<String, &'a RawValue>,
    flags: Option<BTreeMap<String, &'a RawValue>>,
}

impl<'de> Deserialize<'de> for Split<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = Split<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a flag document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Split<'de>, A::Error> {
                let mut split = Split {
                    top: BTreeMap::new(),
                    flags: None,
                };
                // A repeated member is refused (see `duplicate_member`): judged whole.
                let mut seen_flags = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "flags" {
                        if std::mem::replace(&mut seen_flags, true) {
                            return Err(A::Error::custom("duplicate member"));
                        }
                        split.flags = map.next_value::<FlagsMap<'de>>()?.0;
                    } else if split.top.insert(key, map.next_value()?).is_some() {
                        return Err(A::Error::custom("duplicate member"));
                    }
                }
                Ok(split)
            }
        }
        d.deserialize_map(Top)
    }
}

/// `flags`: its members when it is an object; anything else is skipped.
struct FlagsMap<'a>(Option<BTreeMap<String, &'a RawValue>>);

impl<'de> Deserialize<'de> for FlagsMap<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Flags;
        impl<'de> Visitor<'de> for Flags {
            type Value = FlagsMap<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("flags")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FlagsMap<'de>, A::Error> {
                let mut flags = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if flags.insert(key, map.next_value()?).is_some() {
                        return Err(A::Error::custom("duplicate member"));
                    }
                }
                Ok(FlagsMap(Some(flags)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FlagsMap<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FlagsMap(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<FlagsMap<'de>, E> {
                Ok(FlagsMap(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<FlagsMap<'de>, E> {
                Ok(FlagsMap(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<FlagsMap<'de>, E> {
                Ok(FlagsMap(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<FlagsMap<'de>, E> {
                Ok(FlagsMap(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<FlagsMap<'de>, E> {
                Ok(FlagsMap(None))
            }
            fn visit_unit<E>(self) -> Result<FlagsMap<'de>, E> {
                Ok(FlagsMap(None))
            }
        }
        d.deserialize_any(Flags)
    }
}

/// The canonical document: the top-level members in key order (`flags` from the pieces),
/// as serialising the whole tree would write it.
fn assemble(top: &Map<String, Value>, pieces: &[(String, Piece)], hint: usize) -> String {
    let mut out = String::with_capacity(hint + 1024);
    out.push('{');
    for (i, (k, v)) in top.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_key(&mut out, k);
        if k == "flags" {
            out.push('{');
            for (j, (name, piece)) in pieces.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_key(&mut out, name);
                out.push_str(&piece.canonical);
            }
            out.push('}');
        } else {
            out.push_str(&serde_json::to_string(v).expect("a Value always serialises"));
        }
    }
    out.push('}');
    out
}

fn push_key(out: &mut String, key: &str) {
    out.push_str(&serde_json::to_string(key).expect("a string always serialises"));
    out.push(':');
}

/// Nesting depth of a value (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(flags: &[(&str, &str)]) -> String {
        let parts: Vec<String> = flags.iter().map(|(k, f)| format!("{k:?}:{f}")).collect();
        format!(r#"{{"flags":{{{}}}}}"#, parts.join(","))
    }

    const A: &str = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[{"ends_with":[{"var":"email"},"@x.com"]},"on","off"]}}"#;
    const B: &str = r#"{"state":"DISABLED","variants":{"a":"x","b":"y"},"defaultVariant":"b"}"#;

    #[test]
    fn an_unchanged_or_reordered_document_validates_nothing() {
        let mut memo = Memo::new(Options::default());
        let first = memo.parse(doc(&[("a", A), ("b", B)]).as_bytes()).unwrap();
        assert_eq!(memo.stats.validated, 2);
        let same = memo.parse(doc(&[("a", A), ("b", B)]).as_bytes()).unwrap();
        let reordered = memo
            .parse(format!(" {{ \"flags\" : {{ \"b\" : {B} , \"a\":{A} }} }}").as_bytes())
            .unwrap();
        assert_eq!(
            memo.stats,
            MemoStats {
                validated: 2,
                reused: 4,
                whole: 0
            }
        );
        assert_eq!(same.digest, first.digest);
        assert_eq!(reordered.canonical, first.canonical);

        let changed = B.replace(r#""defaultVariant":"b""#, r#""defaultVariant":"a""#);
        let d = memo
            .parse(doc(&[("a", A), ("b", &changed)]).as_bytes())
            .unwrap();
        assert_eq!((memo.stats.validated, memo.stats.reused), (3, 5));
        assert_ne!(d.digest, first.digest);
    }

    #[test]
    fn a_bad_flag_is_refused_as_from_scratch_and_the_cache_survives() {
        let mut memo = Memo::new(Options::default());
        memo.parse(doc(&[("a", A), ("b", B)]).as_bytes()).unwrap();
        let bad = doc(&[("a", A), ("b", &B.replace(r#""b"}"#, r#""zz"}"#))]);
        assert_eq!(
            memo.parse(bad.as_bytes()).unwrap_err(),
            parse(bad.as_bytes(), &Options::default()).unwrap_err()
        );
        assert_eq!(memo.stats.whole, 1);
        // Duplicate members, which serde_json alone would let through (the last wins).
        for twice in [
            doc(&[("a", A), ("a", A)]),
            format!(r#"{{"flags":{{}},"flags":{}}}"#, doc(&[("a", A)])),
            r#"{"flags":{},"metadata":{"v":"1"},"metadata":{"v":"2"}}"#.to_string(),
        ] {
            assert_eq!(
                memo.parse(twice.as_bytes()).unwrap_err(),
                parse(twice.as_bytes(), &Options::default()).unwrap_err(),
                "{twice}"
            );
        }
        memo.parse(doc(&[("a", A), ("b", B)]).as_bytes()).unwrap();
        assert_eq!(
            memo.stats.validated, 3,
            "only the bad flag was judged again"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::flags::Validation;
    use proptest::prelude::*;

    /// Flags as stored (text, so that bad JSON and odd spacing are possible): valid ones
    /// of the realistic shapes, and ones refused for each kind of reason.
    const FLAGS: &[&str] = &[
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"in":[{"var":"country"},["de","fr"]]},"on",{"if":[{"ends_with":[{"var":"email"},"@x.com"]},"on","off"]}]},"metadata":{"owner":"team-a","ticket":"T-1"}}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"fractional":[{"cat":[{"var":"$flagd.flagKey"},{"var":"user"}]},["on",10],["off",90]]}}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"targeting":{"if":[{"sem_ver":[{"var":"version"},">=","1.2.0"]},"on","off"]}}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"targeting":{"if":[{"$ref":"r"},"on","off"]}}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"targeting":{"if":[{"var":"x"},{"$ref":"r"},"off"]}}"#,
        r#"{ "variants" : {"b":"blue","g":"green"}, "state":"DISABLED", "defaultVariant":"g", "description":"dropped by normalisation"}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"targeting":{"iff":[true,"on","off"]}}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"targeting":{"if":[true,"zzz","off"]}}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"nope"}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},}"#,
        r#"{"state":"ENABLED","variants":{"n":1e400}}"#,
        r#"{"state":"ENABLED","variants":{"on":true,"off":false},"state":"DISABLED"}"#,
        r#"[1]"#,
    ];

    /// `$evaluators` (or none): a plain rule, rules returning literals, a missing `r`,
    /// a circle.
    const EVALUATORS: &[Option<&str>] = &[
        None,
        Some(r#"{"r":{"in":["x",{"var":"k"}]}}"#),
        Some(r#"{"r":{"if":[true,"on","off"]}}"#),
        Some(r#"{"r":{"if":[true,"zzz",null]}}"#),
        Some(r#"{"a":{"!":{"$ref":"b"}},"b":{"==":[1,1]}}"#),
        Some(r#"{"r":{"!":{"$ref":"s"}},"s":{"!":{"$ref":"r"}}}"#),
        Some(r#"{"r":{"in":["x",{"var":"k"}]},"r":{"in":["y",{"var":"k"}]}}"#),
    ];

    const METADATA: &[Option<&str>] = &[
        None,
        Some(r#"{"flagSetId":"shop","version":"3"}"#),
        Some(r#"{"bad":[1]}"#),
    ];

    #[derive(Clone, Debug)]
    enum Edit {
        /// Sets flag `name` to `FLAGS[def]` (adds or changes it).
        Set(usize, usize),
        Remove(usize),
        Evaluators(usize),
        Metadata(usize),
        /// Writes the same flags again in another order.
        Reorder,
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            6 => (0..12usize, 0..FLAGS.len()).prop_map(|(n, d)| Edit::Set(n, d)),
            2 => (0..12usize).prop_map(Edit::Remove),
            1 => (0..EVALUATORS.len()).prop_map(Edit::Evaluators),
            1 => (0..METADATA.len()).prop_map(Edit::Metadata),
            1 => Just(Edit::Reorder),
        ]
    }

    /// The document's text: flags rotated by `turn` (and reversed when it is odd), the
    /// top-level members in either order.
    fn text(flags: &BTreeMap<usize, usize>, evals: usize, meta: usize, turn: usize) -> String {
        let mut parts: Vec<String> = flags
            .iter()
            .map(|(n, d)| format!("\"f{n}\": {}", FLAGS[*d]))
            .collect();
        if !parts.is_empty() {
            let k = turn % parts.len();
            parts.rotate_left(k);
        }
        if turn % 2 == 1 {
            parts.reverse();
        }
        let mut top = vec![format!("\"flags\":{{{}}}", parts.join(",\n"))];
        if let Some(e) = EVALUATORS[evals] {
            top.push(format!("\"$evaluators\": {e}"));
        }
        if let Some(m) = METADATA[meta] {
            top.push(format!("\"metadata\":{m}"));
        }
        if turn % 3 == 0 {
            top.reverse();
        }
        format!("{{ {} }}", top.join(", "))
    }

    fn same(memo: &mut Memo, bytes: &[u8], opts: &Options) -> Result<(), TestCaseError> {
        match (memo.parse(bytes), parse(bytes, opts)) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a.canonical, &b.canonical);
                prop_assert_eq!(a.digest, b.digest);
                prop_assert_eq!(a.flag_count, b.flag_count);
                prop_assert_eq!(a.warnings, b.warnings);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "memo {:?} vs whole {:?}", a.is_ok(), b.is_ok()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn memoised_parse_agrees_with_parsing_from_scratch(
            edits in prop::collection::vec(edit(), 1..40),
            basic in any::<bool>(),
            normalize in any::<bool>(),
        ) {
            let opts = Options {
                validation: if basic { Validation::Basic } else { Validation::Strict },
                normalize,
                ..Options::default()
            };
            let mut memo = Memo::new(opts);
            let (mut flags, mut evals, mut meta, mut turn) = (BTreeMap::new(), 0, 0, 0);
            for e in edits {
                match e {
                    Edit::Set(n, d) => { flags.insert(n, d); }
                    Edit::Remove(n) => { flags.remove(&n); }
                    Edit::Evaluators(i) => evals = i,
                    Edit::Metadata(i) => meta = i,
                    Edit::Reorder => turn += 1,
                }
                same(&mut memo, text(&flags, evals, meta, turn).as_bytes(), &opts)?;
            }
        }
    }
}
