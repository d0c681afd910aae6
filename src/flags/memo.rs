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
//! Memory: the cache holds the bytes of the last accepted document as read (each flag's
//! raw form is a range of them) and the last accepted [`Document`], whose canonical text
//! (shared, not copied) holds each flag's canonical piece as a range: about one copy of
//! the document besides the one served. The same bytes again return that document at
//! once, without a split.

use super::common::{common_prefix, common_suffix};
use super::problem::{Problems, Seg};
use super::resume::Resumable;
use super::{parse, shape, strict, Document, DocumentError, FlagChanges, Name, Options};
use serde::de::{Deserialize, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

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
    /// Documents split only where their bytes differ from the last accepted one's.
    pub partial: u64,
}

/// One cached flag: ranges of the memo's name list, raw bytes and canonical text.
struct Cached {
    name: Range<usize>,
    /// The name as written in the raw bytes (`None`: written with escapes).
    key: Option<Range<usize>>,
    raw: Range<usize>,
    /// The flag's member (`"name":{…}`) in the last document's canonical text.
    canonical: Range<usize>,
}

/// What the last accepted document's flags were, by name (sorted).
#[derive(Default)]
struct Cache {
    /// The document as read.
    raw: Vec<u8>,
    /// The document as accepted (its canonical text holds the pieces).
    doc: Option<Document>,
    /// The flags' names, one after the other.
    names: String,
    flags: Vec<Cached>,
    /// The flags in the order of the raw bytes (positions in `flags`).
    order: Vec<u32>,
    /// Where the raw bytes' `flags` object opens (just after its `{`), when known.
    flags_open: Option<usize>,
    /// Where hashing the canonical text can resume from.
    hashed: Resumable,
    /// The other top-level members' raw values.
    top: Vec<(String, Range<usize>)>,
}

impl Cache {
    fn name(&self, c: &Cached) -> &str {
        &self.names[c.name.clone()]
    }

    /// The canonical member of flag `name` if its raw bytes are `raw`; `at` walks the
    /// (sorted) flags along with the caller's sorted names.
    fn find(&self, at: &mut usize, name: &str, raw: &str) -> Option<Range<usize>> {
        while *at < self.flags.len() && self.name(&self.flags[*at]) < name {
            *at += 1;
        }
        let c = self.flags.get(*at)?;
        (self.name(c) == name && &self.raw[c.raw.clone()] == raw.as_bytes())
            .then(|| c.canonical.clone())
    }

    /// Flag `i` of the cache read from `text`, where its bytes sit `from` - `to` further on
    /// (the same bytes as in the cached document).
    fn borrowed<'a>(&self, i: u32, text: &'a str, from: usize, to: usize) -> Option<Member<'a>> {
        let c = &self.flags[i as usize];
        let at = |r: &Range<usize>| text.get(r.start - from + to..r.end - from + to);
        Some(Member {
            name: Name(Cow::Borrowed(at(c.key.as_ref()?)?)),
            raw: at(&c.raw)?,
            same_as: Some(i),
        })
    }

    /// The document split like [`Split`] but only where its bytes differ from the cached
    /// document's: the common beginning and end are taken from the cache, and the flags
    /// between are read from the last flag before the first difference until a member
    /// ends where one ended in the cached document, within the common end. From there
    /// on the bytes and the reader's state (after a member of `flags`) are those that the
    /// cached document was read with, so the rest reads the same. `None`: split whole.
    fn resplit<'a>(&self, text: &'a str) -> Option<Split<'a>> {
        self.doc.as_ref()?;
        let open = self.flags_open?;
        let (old, new) = (self.raw.as_slice(), text.as_bytes());
        let p = common_prefix(old, new);
        let s = common_suffix(old, new, old.len().min(new.len()) - p);
        let (old_tail, new_tail) = (old.len() - s, new.len() - s);
        let mut top = BTreeMap::new();
        for (k, r) in &self.top {
            let v = if r.end <= p {
                text.get(r.clone())?
            } else if r.start >= old_tail {
                text.get(r.start - old_tail + new_tail..r.end - old_tail + new_tail)?
            } else {
                return None;
            };
            top.insert(k.clone(), v);
        }
        let end = |k: usize| self.flags[self.order[k] as usize].raw.end;
        // The flags before the first difference, read as they were.
        let before = self
            .order
            .partition_point(|&i| self.flags[i as usize].raw.end <= p);
        let mut pos = if before == 0 { open } else { end(before - 1) };
        if pos > p {
            return None;
        }
        let mut flags = Vec::with_capacity(self.order.len() + 4);
        for &i in &self.order[..before] {
            flags.push(self.borrowed(i, text, 0, 0)?);
        }
        let mut after_member = before > 0;
        loop {
            if pos >= new_tail {
                let was = pos - new_tail + old_tail;
                let rest = if after_member {
                    let k = self
                        .order
                        .partition_point(|&i| self.flags[i as usize].raw.end < was);
                    (k < self.order.len() && end(k) == was).then_some(k + 1)
                } else {
                    (was == open).then_some(0)
                };
                if let Some(rest) = rest {
                    for &i in &self.order[rest..] {
                        flags.push(self.borrowed(i, text, old_tail, new_tail)?);
                    }
                    return Some(Split {
                        top,
                        flags: Some(flags),
                        region: Some(Region {
                            same_until: p,
                            old_tail,
                            new_tail,
                        }),
                    });
                }
            }
            // The next member; the end of `flags` (or anything odd) before the two
            // documents agree again: split whole.
            pos = skip_ws(new, pos);
            if after_member {
                if new.get(pos) != Some(&b',') {
                    return None;
                }
                pos = skip_ws(new, pos + 1);
            }
            let mut keys =
                serde_json::Deserializer::from_str(text.get(pos..)?).into_iter::<Name<'a>>();
            let name = keys.next()?.ok()?;
            pos = skip_ws(new, pos + keys.byte_offset());
            if new.get(pos) != Some(&b':') {
                return None;
            }
            pos = skip_ws(new, pos + 1);
            let mut values =
                serde_json::Deserializer::from_str(text.get(pos..)?).into_iter::<&'a RawValue>();
            let raw = values.next()?.ok()?.get();
            pos += values.byte_offset();
            flags.push(Member {
                name,
                raw,
                same_as: None,
            });
            after_member = true;
        }
    }
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while matches!(b.get(pos), Some(b' ' | b'\n' | b'\t' | b'\r')) {
        pos += 1;
    }
    pos
}

/// A [`super::parse`] that remembers the flags of the last accepted document.
pub struct Memo {
    opts: Options,
    /// The canonical `$evaluators` the cached flags were checked with.
    evaluators: Option<String>,
    cache: Cache,
    pub stats: MemoStats,
}

/// A flag's canonical member: from the last document, or just validated.
enum Piece {
    Cached(Range<usize>),
    Fresh(String),
}

impl Memo {
    pub fn new(opts: Options) -> Self {
        Memo {
            opts,
            evaluators: None,
            cache: Cache::default(),
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
        if let Some(doc) = &self.cache.doc {
            if self.cache.raw == bytes {
                self.stats.reused += doc.flag_count as u64;
                return Some(doc.clone());
            }
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let Split { top, flags, region } = match self.cache.resplit(text) {
            Some(split) => {
                self.stats.partial += 1;
                split
            }
            None => serde_json::from_str(text).ok()?,
        };
        let mut flags = flags?;
        // Sorted as the canonical form writes them (and as the cache holds them); a
        // repeated name is refused (see `duplicate_member`): judged whole.
        flags.sort_by(|a, b| a.name.0.cmp(&b.name.0));
        if flags.windows(2).any(|w| w[0].name == w[1].name) {
            return None;
        }

        // The document without its flags: shape and strict checks of the shared parts.
        let mut skeleton = Map::new();
        let offset = |raw: &str| raw.as_ptr() as usize - text.as_ptr() as usize;
        let mut top_ranges = Vec::with_capacity(top.len());
        for (k, raw) in top {
            if super::duplicate_member(raw).is_some() {
                return None;
            }
            let v: Value = serde_json::from_str(raw).ok()?;
            top_ranges.push((k.clone(), offset(raw)..offset(raw) + raw.len()));
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
        // Flags checked with other shared rules are judged again.
        let same_rules = evaluators == self.evaluators;

        // Nothing in the cache changes until the document is accepted: a refused one
        // leaves the last good flags cached.
        let mut pieces = Vec::with_capacity(flags.len());
        let mut at = 0;
        for m in &flags {
            let hit = match (same_rules, m.same_as) {
                (false, _) => None,
                // Read where the bytes are the cached document's: nothing to compare.
                (true, Some(i)) => Some(self.cache.flags[i as usize].canonical.clone()),
                (true, None) => self.cache.find(&mut at, &m.name, m.raw),
            };
            pieces.push(match hit {
                Some(range) => {
                    self.stats.reused += 1;
                    Piece::Cached(range)
                }
                None => {
                    self.stats.validated += 1;
                    Piece::Fresh(flag(&self.opts, &prepared, &m.name, m.raw)?)
                }
            });
        }

        let changes = self.changes(&flags, &pieces);
        let mut cache = Cache {
            raw: Vec::new(),
            doc: None,
            names: String::with_capacity(self.cache.names.len() + 64),
            flags: Vec::with_capacity(flags.len()),
            order: Vec::new(),
            flags_open: None,
            top: top_ranges,
            hashed: Resumable::default(),
        };
        let last = self.cache.doc.as_ref().map_or("", |d| &*d.canonical);
        let hint = last.len().max(bytes.len()) + 1024;
        let canonical = assemble(top_map, hint, |out| {
            // Cached members that follow each other in the last document are copied as
            // one run, with the commas between them.
            let mut run: Option<Range<usize>> = None;
            for (j, (m, piece)) in flags.iter().zip(&pieces).enumerate() {
                let canonical = match piece {
                    Piece::Cached(r) => {
                        let run = match &mut run {
                            Some(cur) if cur.end + 1 == r.start => {
                                cur.end = r.end;
                                cur
                            }
                            _ => {
                                copy_run(out, last, &mut run);
                                if j > 0 {
                                    out.push(',');
                                }
                                run.insert(r.clone())
                            }
                        };
                        let start = out.len() + r.start - run.start;
                        start..start + r.len()
                    }
                    Piece::Fresh(s) => {
                        copy_run(out, last, &mut run);
                        if j > 0 {
                            out.push(',');
                        }
                        let start = out.len();
                        out.push_str(s);
                        start..out.len()
                    }
                };
                let n = cache.names.len();
                cache.names.push_str(&m.name);
                let r = offset(m.raw);
                let key = match &m.name.0 {
                    Cow::Borrowed(k) => Some(offset(k)..offset(k) + k.len()),
                    Cow::Owned(_) => None,
                };
                cache.flags.push(Cached {
                    name: n..cache.names.len(),
                    key,
                    raw: r..r + m.raw.len(),
                    canonical,
                });
            }
            copy_run(out, last, &mut run);
        });
        if canonical.len() > self.opts.max_bytes {
            return None;
        }
        let (digest, hashed) = Resumable::digest(&self.cache.hashed, last, &canonical);
        cache.hashed = hashed;
        let doc = Document {
            digest,
            canonical: std::sync::Arc::new(canonical),
            flag_count: flags.len(),
            warnings: Problems::default(),
            changes,
        };
        let mut order: Vec<u32> = (0..cache.flags.len() as u32).collect();
        order.sort_by_key(|&i| cache.flags[i as usize].raw.start);
        // Just after the `{` before the first flag's name (and its quote).
        cache.flags_open = order
            .first()
            .and_then(|&i| cache.flags[i as usize].key.as_ref())
            .and_then(|k| {
                let before = bytes[..k.start.checked_sub(1)?].trim_ascii_end();
                before.ends_with(b"{").then_some(before.len())
            });
        cache.order = order;
        // The last document's bytes become this one's, rewritten only where they differ.
        cache.raw = std::mem::take(&mut self.cache.raw);
        match region {
            Some(d) => {
                cache.raw.splice(
                    d.same_until..d.old_tail,
                    bytes[d.same_until..d.new_tail].iter().copied(),
                );
            }
            None => {
                cache.raw.clear();
                cache.raw.extend_from_slice(bytes);
            }
        }
        debug_assert!(cache.raw == bytes);
        cache.doc = Some(doc.clone());
        self.cache = cache;
        self.evaluators = evaluators;
        Some(doc)
    }
}

impl Memo {
    /// The flags added, removed and changed since the last accepted document (a flag
    /// read again from the same bytes is unchanged; one validated again is compared by
    /// its canonical member).
    fn changes(&self, flags: &[Member<'_>], pieces: &[Piece]) -> Option<FlagChanges> {
        let last = self.cache.doc.as_ref()?;
        let mut c = FlagChanges {
            since: last.digest,
            ..FlagChanges::default()
        };
        let cached = &self.cache.flags;
        let mut j = 0;
        for (m, piece) in flags.iter().zip(pieces) {
            let name: &str = &m.name;
            while j < cached.len() && self.cache.name(&cached[j]) < name {
                c.removed.push(self.cache.name(&cached[j]).to_string());
                j += 1;
            }
            match cached.get(j) {
                Some(old) if self.cache.name(old) == name => {
                    if let Piece::Fresh(s) = piece {
                        if **s != last.canonical[old.canonical.clone()] {
                            c.changed.push(name.to_string());
                        }
                    }
                    j += 1;
                }
                _ => c.added.push(name.to_string()),
            }
        }
        c.removed.extend(
            cached[j..]
                .iter()
                .map(|old| self.cache.name(old).to_string()),
        );
        Some(c)
    }
}

/// Parses, checks and canonicalises one flag into its member (`"name":{…}`); `None` if
/// anything is wrong with it.
fn flag(opts: &Options, prepared: &strict::Prepared<'_>, name: &str, raw: &str) -> Option<String> {
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
    if opts.normalize {
        shape::strip(&mut value);
    }
    let mut out = String::with_capacity(raw.len() + name.len() + 3);
    push_key(&mut out, name);
    push_json(&mut out, &value);
    Some(out)
}

/// A document split in one pass: its flags (the map form, as read) and its other members,
/// each as borrowed raw JSON. `flags` is `None` when the member is not a JSON object (or
/// absent).
struct Split<'a> {
    top: BTreeMap<String, &'a str>,
    flags: Option<Vec<Member<'a>>>,
    /// Where the bytes differ from the cached document's, when split from it.
    region: Option<Region>,
}

/// The bytes that differ between the cached document and a new one: the new one is the
/// cached one with `old[same_until..old_tail]` replaced by `new[same_until..new_tail]`.
struct Region {
    same_until: usize,
    old_tail: usize,
    new_tail: usize,
}

/// One member of `flags` as read.
struct Member<'a> {
    name: Name<'a>,
    raw: &'a str,
    /// The cached flag whose name and bytes these are, when the split took them from
    /// where the document is byte for byte the cached one.
    same_as: Option<u32>,
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
                    region: None,
                };
                // A repeated member is refused (see `duplicate_member`): judged whole.
                let mut seen_flags = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "flags" {
                        if std::mem::replace(&mut seen_flags, true) {
                            return Err(A::Error::custom("duplicate member"));
                        }
                        split.flags = map.next_value::<FlagsMap<'de>>()?.0;
                    } else if split
                        .top
                        .insert(key, map.next_value::<&RawValue>()?.get())
                        .is_some()
                    {
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
struct FlagsMap<'a>(Option<Vec<Member<'a>>>);

impl<'de> Deserialize<'de> for FlagsMap<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Flags;
        impl<'de> Visitor<'de> for Flags {
            type Value = FlagsMap<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("flags")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FlagsMap<'de>, A::Error> {
                let mut flags = Vec::with_capacity(map.size_hint().unwrap_or(64));
                while let Some(key) = map.next_key::<Name<'de>>()? {
                    flags.push(Member {
                        name: key,
                        raw: map.next_value::<&RawValue>()?.get(),
                        same_as: None,
                    });
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

/// The canonical document: the top-level members in key order, `flags` written by
/// `members` (what serialising the whole tree would give).
fn assemble(top: &Map<String, Value>, hint: usize, members: impl FnOnce(&mut String)) -> String {
    let mut out = String::with_capacity(hint);
    let mut members = Some(members);
    out.push('{');
    for (i, (k, v)) in top.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_key(&mut out, k);
        if k == "flags" {
            out.push('{');
            if let Some(m) = members.take() {
                m(&mut out);
            }
            out.push('}');
        } else {
            push_json(&mut out, v);
        }
    }
    out.push('}');
    out
}

/// Copies a run of the last document's canonical text, if one is pending.
fn copy_run(out: &mut String, last: &str, run: &mut Option<Range<usize>>) {
    if let Some(r) = run.take() {
        out.push_str(&last[r]);
    }
}

fn push_key(out: &mut String, key: &str) {
    push_json(out, key);
    out.push(':');
}

/// Appends the compact JSON of `v` (serde_json writes valid UTF-8).
fn push_json<T: serde::Serialize + ?Sized>(out: &mut String, v: &T) {
    out.push_str(&serde_json::to_string(v).expect("a Value always serialises"));
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
                whole: 0,
                partial: 0,
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
    fn what_changed_is_named_from_the_last_accepted_document() {
        let mut memo = Memo::new(Options::default());
        let first = memo.parse(doc(&[("a", A), ("b", B)]).as_bytes()).unwrap();
        assert_eq!(
            first.changes, None,
            "nothing to compare the first document with"
        );
        let changed = B.replace(r#""defaultVariant":"b""#, r#""defaultVariant":"a""#);
        // `b` changed, `c` added, `a` removed; `b` respaced alone would be no change.
        let next = memo
            .parse(doc(&[("b", &changed), ("c", A)]).as_bytes())
            .unwrap();
        assert_eq!(
            next.changes,
            Some(FlagChanges {
                since: first.digest,
                added: vec!["c".into()],
                removed: vec!["a".into()],
                changed: vec!["b".into()],
            })
        );
        let respaced = memo
            .parse(doc(&[("b", &changed.replace(',', " , ")), ("c", A)]).as_bytes())
            .unwrap();
        assert_eq!(respaced.digest, next.digest);
        assert_eq!(
            respaced.changes,
            Some(FlagChanges {
                since: next.digest,
                ..FlagChanges::default()
            })
        );
    }

    #[test]
    fn a_change_is_read_from_where_the_bytes_differ_and_agrees_with_a_whole_read() {
        let flags = |n: usize, at: usize, v: &str| -> Vec<(String, String)> {
            (0..n)
                .map(|i| {
                    let f = if i == at {
                        B.replace(r#""y""#, v)
                    } else {
                        A.to_string()
                    };
                    (format!("f{i:02}"), f)
                })
                .collect()
        };
        let text = |fl: &[(String, String)], meta: &str| {
            let parts: Vec<String> = fl.iter().map(|(k, f)| format!("{k:?}: {f}")).collect();
            format!(
                r#"{{"metadata":{{"v":"{meta}"}}, "flags": {{ {} }}, "zz": 1}}"#,
                parts.join(",\n ")
            )
        };
        let mut memo = Memo::new(Options::default());
        let mut edits = vec![
            text(&flags(40, 0, r#""a""#), "1"),
            text(&flags(40, 20, r#""a""#), "1"),
            text(&flags(40, 0, r#""b""#), "1"),
            text(&flags(40, 39, r#""b""#), "1"),
            text(&flags(40, 39, r#""a""#), "1"),
        ];
        // A flag added in the middle, one removed, the metadata before `flags` changed.
        let mut more = flags(40, 20, r#""a""#);
        more.insert(20, ("f19x".into(), B.to_string()));
        edits.push(text(&more, "1"));
        more.remove(5);
        edits.push(text(&more, "1"));
        edits.push(text(&more, "2"));
        // A bad flag in the middle is refused as from scratch.
        more[10].1 = B.replace(r#""b"}"#, r#""zz"}"#);
        edits.push(text(&more, "2"));
        more[10].1 = A.to_string();
        edits.push(text(&more, "2"));
        for t in &edits {
            let opts = memo.opts;
            match (memo.parse(t.as_bytes()), parse(t.as_bytes(), &opts)) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.canonical, b.canonical, "{t}");
                    assert_eq!(a.digest, b.digest);
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("{t}: memo {a:?} whole {b:?}"),
            }
        }
        assert!(memo.stats.partial >= 6, "{:?}", memo.stats);
        assert!(memo.stats.validated < 40 + 20, "{:?}", memo.stats);
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
