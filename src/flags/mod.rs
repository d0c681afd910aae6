//! Flag documents: raw bytes from Redis -> a validated, canonical document and its digest.
//!
//! Pure and synchronous, so the service, `validate` and the tests all judge a document the
//! same way. The canonical form is compact JSON with object keys sorted (serde_json's
//! default map is ordered), so re-serialising the same content (other key order, other
//! white space) gives the same bytes and the same SHA-256 digest: no spurious pushes.
//!
//! Normalisation (on by default) rewrites a document into the form every client accepts:
//! the array form of `flags` becomes the map form, and flag fields other than `state`,
//! `variants`, `defaultVariant`, `targeting` and `metadata` are dropped (the Python
//! provider refuses them). The digest is taken over what clients receive.

mod common;
mod memo;
mod operators;
pub mod problem;
mod resume;
mod rules;
pub mod schema;
mod shape;
mod strict;

pub use common::{common_prefix, common_suffix};
pub use memo::{Memo, MemoStats};
pub use problem::{Problem, ProblemKind, Problems};
use shape::shape;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A SHA-256 digest of a document's canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The first 12 hex digits: enough to tell documents apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// A document that passed validation, in canonical form.
#[derive(Clone, Debug)]
pub struct Document {
    /// The canonical JSON sent to clients (shared by the views, the encoded messages and
    /// the change history: never copied).
    pub canonical: Arc<String>,
    /// SHA-256 of `canonical`.
    pub digest: Digest,
    /// Number of flags, for logs and `watch`.
    pub flag_count: usize,
    /// With `--validation basic`, what strict validation would have refused (for a
    /// warning); always empty in strict mode.
    pub warnings: Problems,
    /// What changed since the document read before it, when a [`Memo`] knows.
    pub changes: Option<FlagChanges>,
}

/// The flags added, removed and changed (by name, sorted) from the document `since`
/// to this one, as a [`Memo`] saw them while validating.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagChanges {
    pub since: Digest,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// How documents are read.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Refuse payloads larger than this many bytes.
    pub max_bytes: usize,
    /// Rewrite into the form every client accepts (map form, known flag fields only).
    pub normalize: bool,
    /// How strictly targeting rules are judged.
    pub validation: Validation,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            normalize: true,
            validation: Validation::Strict,
        }
    }
}

/// `--validation`: how strictly documents are judged (see docs/validation.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Validation {
    /// flagd's JSON schema, plus operators, $refs and variant names in targeting rules.
    #[default]
    Strict,
    /// The shape only (flags, state, variants, default variant); what strict would refuse
    /// is logged as a warning. For an operator flagd added before this release knows it.
    Basic,
}

/// 4 MiB is the default receive limit of gRPC clients (flagd, Go, Java, Python, Node);
/// 64 KiB of it is left for the protobuf envelope and the sync context.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

/// Why a document was refused. The `reason()` label is used as a metric attribute.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DocumentError {
    #[error("payload is {size} bytes, above the limit of {limit} bytes (--max-payload-bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("payload is not valid JSON: {message} at line {line} column {column}{}", near(.pointer))]
    NotJson {
        message: String,
        line: usize,
        column: usize,
        /// JSON pointer of the innermost member or element being read when the error was
        /// found (`""`: the top level).
        pointer: String,
    },
    #[error("{pointer}: {message}")]
    Shape { pointer: String, message: String },
    /// What strict validation found (flagd's schema, targeting rules): each problem names
    /// its flag and pointer.
    #[error("{problems}")]
    Invalid { problems: Problems },
}

impl DocumentError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DocumentError::TooLarge { .. } => "too_large",
            DocumentError::NotUtf8 { .. } => "not_utf8",
            DocumentError::NotJson { .. } => "not_json",
            DocumentError::Shape { .. } => "invalid_shape",
            DocumentError::Invalid { problems } => match problems.list.first().map(|p| p.kind) {
                Some(ProblemKind::Schema) => "invalid_schema",
                _ => "invalid_rules",
            },
        }
    }

    /// One line per problem: strict findings each on their own line, anything else as
    /// one line.
    pub fn lines(&self) -> Vec<String> {
        match self {
            DocumentError::Invalid { problems } => problems.lines(),
            other => vec![other.to_string()],
        }
    }
}

/// Escapes one JSON-pointer reference token (RFC 6901).
pub(crate) fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl Document {
    /// The canonical document as a tree (selector filtering, merging sources), parsed on
    /// demand: a tree of a 1 MB document is several times its size, and most services
    /// never need it.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.canonical).expect("the canonical form is valid JSON")
    }

    /// A document from an already validated value (the merge of validated sources).
    pub fn from_value(value: Value) -> Self {
        let canonical = serde_json::to_string(&value).expect("a Value always serialises");
        let flag_count = value
            .get("flags")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        Document {
            digest: Digest::of(canonical.as_bytes()),
            canonical: Arc::new(canonical),
            flag_count,
            warnings: Problems::default(),
            changes: None,
        }
    }
}

/// Hash fields that are not flags: the document's `$evaluators` and `metadata`.
pub const HASH_EVALUATORS_FIELD: &str = "$evaluators";
pub const HASH_METADATA_FIELD: &str = "$metadata";

/// Reads a hash-stored source (`type=hash`): `fields` is the JSON array
/// `[field, value, field, value, …]` of HGETALL. Each field is a flag (its value the
/// flag's JSON), except `$evaluators` and `$metadata`; the assembled document is then
/// validated like any other.
pub fn parse_hash(fields: &[u8], opts: &Options) -> Result<Document, DocumentError> {
    parse(&hash_document(fields)?, opts)
}

/// The document a hash's fields make (see [`parse_hash`]), not yet validated.
fn hash_document(fields: &[u8]) -> Result<Vec<u8>, DocumentError> {
    let items: Vec<String> =
        serde_json::from_slice(fields).map_err(|e| DocumentError::NotJson {
            message: format!("hash fields could not be read: {}", json_message(&e)),
            line: e.line(),
            column: e.column(),
            pointer: String::new(),
        })?;
    let mut flags = serde_json::Map::new();
    let mut doc = serde_json::Map::new();
    for pair in items.chunks(2) {
        let [field, text] = pair else {
            return Err(shape("", "hash reply has an odd number of items"));
        };
        let value: Value = serde_json::from_str(text).map_err(|e| {
            shape(
                format!("/flags/{}", token(field)),
                format!(
                    "hash field {field:?} is not valid JSON: {} at line {} column {}",
                    json_message(&e),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if let Some(pointer) = duplicate_member(text) {
            let at = match field.as_str() {
                HASH_EVALUATORS_FIELD => "/$evaluators".to_string(),
                HASH_METADATA_FIELD => "/metadata".to_string(),
                f => format!("/flags/{}", token(f)),
            };
            return Err(duplicate(format!("{at}{pointer}")));
        }
        match field.as_str() {
            HASH_EVALUATORS_FIELD => {
                doc.insert("$evaluators".into(), value);
            }
            HASH_METADATA_FIELD => {
                doc.insert("metadata".into(), value);
            }
            f if f.starts_with('$') => {
                return Err(shape(
                    "",
                    format!(
                        "hash field {f:?}: fields starting with $ are reserved ($evaluators, $metadata)"
                    ),
                ))
            }
            _ => {
                flags.insert(field.clone(), value);
            }
        }
    }
    doc.insert("flags".into(), Value::Object(flags));
    Ok(serde_json::to_vec(&Value::Object(doc)).expect("a Value always serialises"))
}

/// Reads, validates and canonicalises a flag document.
pub fn parse(bytes: &[u8], opts: &Options) -> Result<Document, DocumentError> {
    if bytes.len() > opts.max_bytes {
        return Err(DocumentError::TooLarge {
            size: bytes.len(),
            limit: opts.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DocumentError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut value: Value = serde_json::from_str(text).map_err(|e| DocumentError::NotJson {
        message: json_message(&e),
        line: e.line(),
        column: e.column(),
        pointer: pointer_at(text, e.line(), e.column()),
    })?;
    if let Some(pointer) = duplicate_member(text) {
        return Err(duplicate(pointer));
    }
    let flag_count = shape::check(&value)?;
    let problems = strict::check(&value);
    let warnings = match opts.validation {
        Validation::Strict if !problems.is_empty() => {
            return Err(DocumentError::Invalid { problems })
        }
        Validation::Strict => Problems::default(),
        Validation::Basic => problems,
    };
    if opts.normalize {
        shape::normalize(&mut value);
    }
    let canonical = serde_json::to_string(&value).expect("a serde_json::Value always serialises");
    if canonical.len() > opts.max_bytes {
        return Err(DocumentError::TooLarge {
            size: canonical.len(),
            limit: opts.max_bytes,
        });
    }
    Ok(Document {
        digest: Digest::of(canonical.as_bytes()),
        canonical: Arc::new(canonical),
        flag_count,
        warnings,
        changes: None,
    })
}

fn duplicate(pointer: String) -> DocumentError {
    shape(
        pointer,
        "duplicate member: the object holds this name twice (JSON parsers disagree on which \
         one wins); give it once",
    )
}

/// A member's name as read (a flag's in the memo): borrowed from the document unless it
/// holds escapes.
#[derive(serde::Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Name<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Name<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// The JSON pointer of the first member whose name appears twice in its object, if any.
/// serde_json keeps the last one silently; other parsers keep the first or refuse. Run on
/// text that is already known to be valid JSON; a second pass that builds no values. It
/// reads names in place (no copy unless they hold escapes) and builds no pointer; only a
/// document that has a repeated name is read again to build the pointer.
pub(super) fn duplicate_member(text: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
    /// The names seen in one object: a short list, a set once there are many.
    #[derive(Default)]
    struct Seen<'a> {
        few: Vec<Cow<'a, str>>,
        many: std::collections::HashSet<Cow<'a, str>>,
    }
    impl<'a> Seen<'a> {
        /// `false` if `key` was seen before.
        fn insert(&mut self, key: Cow<'a, str>) -> bool {
            if self.many.is_empty() {
                if self.few.contains(&key) {
                    return false;
                }
                if self.few.len() < 16 {
                    self.few.push(key);
                    return true;
                }
                self.many.extend(self.few.drain(..));
            }
            self.many.insert(key)
        }
    }
    /// The walk; with a `path`, it records where it is and the pointer of a repeat.
    struct Walk<'a> {
        path: Option<&'a mut Vec<String>>,
        found: &'a mut Option<String>,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            for i in 0.. {
                if let Some(path) = self.path.as_deref_mut() {
                    path.push(i.to_string());
                }
                let more = seq.next_element_seed(Walk {
                    path: self.path.as_deref_mut(),
                    found: &mut *self.found,
                })?;
                if let Some(path) = self.path.as_deref_mut() {
                    path.pop();
                }
                if more.is_none() {
                    break;
                }
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            let mut seen = Seen::default();
            while let Some(Name(key)) = map.next_key::<Name<'de>>()? {
                let again = !seen.insert(key.clone());
                if let Some(path) = self.path.as_deref_mut() {
                    path.push(key.into_owned());
                    if again {
                        *self.found = Some(path.iter().map(|k| format!("/{}", token(k))).collect());
                    }
                }
                if again {
                    return Err(A::Error::custom("duplicate member"));
                }
                map.next_value_seed(Walk {
                    path: self.path.as_deref_mut(),
                    found: &mut *self.found,
                })?;
                if let Some(path) = self.path.as_deref_mut() {
                    path.pop();
                }
            }
            Ok(())
        }
    }
    let walk = |path: Option<&mut Vec<String>>| {
        let mut found = None;
        let mut de = serde_json::Deserializer::from_str(text);
        let stopped = Walk {
            path,
            found: &mut found,
        }
        .deserialize(&mut de)
        .is_err();
        (stopped, found)
    };
    if !walk(None).0 {
        return None;
    }
    walk(Some(&mut Vec::new())).1
}

fn near(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" (in {pointer})")
    }
}

/// The JSON pointer of the place a syntax error was found: a light scan of the text up
/// to serde_json's line and column (1-based; the column counts bytes), tracking the open
/// objects (with their current member name) and arrays (with their current index).
fn pointer_at(text: &str, line: usize, column: usize) -> String {
    enum Frame {
        Object { key: Option<String>, want_key: bool },
        Array { index: usize },
    }
    let line_start = if line <= 1 {
        Some(0)
    } else {
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)
    };
    // Up to, not including, the character the error was found at (a closing bracket
    // there must not close the frame it is wrong in).
    let end = line_start.map_or(text.len(), |s| {
        (s + column.saturating_sub(1)).min(text.len())
    });
    let bytes = &text.as_bytes()[..end];
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object { key, want_key }) = stack.last_mut() {
                    if *want_key {
                        let raw = String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]);
                        *key = Some(
                            serde_json::from_str(&format!("\"{raw}\""))
                                .unwrap_or_else(|_| raw.into_owned()),
                        );
                    }
                }
            }
            b'{' => stack.push(Frame::Object {
                key: None,
                want_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { want_key, .. }) = stack.last_mut() {
                    *want_key = false;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { key, want_key }) => {
                    *key = None;
                    *want_key = true;
                }
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    stack
        .iter()
        .filter_map(|f| match f {
            Frame::Object { key: Some(k), .. } => Some(format!("/{}", token(k))),
            Frame::Object { key: None, .. } => None,
            Frame::Array { index } => Some(format!("/{index}")),
        })
        .collect()
}

/// serde_json's message without its trailing " at line L column C".
fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Document {
        parse(s.as_bytes(), &Options::default()).unwrap()
    }

    fn err(s: &str) -> DocumentError {
        parse(s.as_bytes(), &Options::default()).unwrap_err()
    }

    const FLAG: &str = r#"{"flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}"#;

    #[test]
    fn a_hash_of_flags_assembles_into_the_same_document() {
        let flag =
            r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
        let fields = serde_json::to_vec(&["a", flag]).unwrap();
        assert_eq!(
            parse_hash(&fields, &Options::default()).unwrap().digest,
            ok(FLAG).digest
        );

        let fields = serde_json::to_vec(&[
            "a",
            flag,
            "$evaluators",
            r#"{"e":{"in":["x","y"]}}"#,
            "$metadata",
            r#"{"flagSetId":"s"}"#,
        ])
        .unwrap();
        let d = parse_hash(&fields, &Options::default()).unwrap();
        assert_eq!(d.value()["metadata"]["flagSetId"], "s");
        assert_eq!(d.value()["$evaluators"]["e"]["in"][0], "x");
        assert_eq!(d.flag_count, 1);
    }

    #[test]
    fn a_bad_hash_field_is_named() {
        let fields = serde_json::to_vec(&[
            "good",
            r#"{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a"}"#,
            "bad",
            "{nope",
        ])
        .unwrap();
        let e = parse_hash(&fields, &Options::default()).unwrap_err();
        assert!(
            e.to_string().contains("/flags/bad") && e.to_string().contains("\"bad\""),
            "{e}"
        );
        let fields = serde_json::to_vec(&["$schema", "{}"]).unwrap();
        assert!(parse_hash(&fields, &Options::default())
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        let fields = serde_json::to_vec(&["x", r#"{"state":"ENABLED"}"#]).unwrap();
        assert!(parse_hash(&fields, &Options::default())
            .unwrap_err()
            .to_string()
            .contains("/flags/x"));
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_digest() {
        let a = ok(FLAG);
        let b = ok(
            r#"{ "flags" : { "a" : { "defaultVariant":"on", "variants":{"off":false,"on":true}, "state":"ENABLED" } } }"#,
        );
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(a.flag_count, 1);
    }

    #[test]
    fn a_real_change_changes_the_digest() {
        let b = ok(&FLAG.replace(r#""defaultVariant":"on""#, r#""defaultVariant":"off""#));
        assert_ne!(ok(FLAG).digest, b.digest);
    }

    #[test]
    fn array_form_becomes_map_form_without_key() {
        let d = ok(
            r#"{"flags":[{"key":"a","state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","description":"x"}]}"#,
        );
        assert_eq!(d.digest, ok(FLAG).digest);
        assert!(!d.canonical.contains("description"));
    }

    #[test]
    fn without_normalize_the_array_form_is_kept() {
        let opts = Options {
            normalize: false,
            ..Options::default()
        };
        let d = parse(
            br#"{"flags":[{"key":"a","state":"ENABLED","variants":{"x":1}}]}"#,
            &opts,
        )
        .unwrap();
        assert!(d.canonical.contains(r#""key":"a""#));
        assert_eq!(d.flag_count, 1);
    }

    #[test]
    fn null_or_absent_default_variant_is_valid() {
        ok(r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":"1"},"defaultVariant":null}}}"#);
        ok(r#"{"flags":{"a":{"state":"DISABLED","variants":{"x":"1"}}}}"#);
    }

    #[test]
    fn refusals_name_the_place_and_reason() {
        let cases: &[(&str, &str)] = &[
            ("[]", "must be a JSON object"),
            ("{}", "missing required member \"flags\""),
            (r#"{"flags":7}"#, "/flags: must be an object"),
            (
                r#"{"flags":{"a":{"variants":{"x":1}}}}"#,
                "/flags/a: missing required member \"state\"",
            ),
            (
                r#"{"flags":{"a":{"state":"ON","variants":{"x":1}}}}"#,
                "/flags/a/state",
            ),
            (
                r#"{"flags":{"a":{"state":"ENABLED","variants":{}}}}"#,
                "at least one variant",
            ),
            (
                r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":1,"y":"s"}}}}"#,
                "one type",
            ),
            (
                r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":[1]}}}}"#,
                "/flags/a/variants/x",
            ),
            (
                r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"defaultVariant":"y"}}}"#,
                "names no variant",
            ),
            (
                r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"targeting":[]}}}"#,
                "/flags/a/targeting",
            ),
            (
                r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":1},"metadata":{"m":{}}}}}"#,
                "/flags/a/metadata/m",
            ),
            (r#"{"flags":{},"metadata":{"v":[1]}}"#, "/metadata/v"),
            (r#"{"flags":{},"$evaluators":{"r":1}}"#, "/$evaluators/r"),
            (
                r#"{"flags":[{"state":"ENABLED","variants":{"x":1}}]}"#,
                "/flags/0",
            ),
            (
                r#"{"flags":{"a/b":{"state":"ENABLED","variants":{"x":null}}}}"#,
                "/flags/a~1b/variants/x",
            ),
        ];
        for (doc, want) in cases {
            let e = err(doc).to_string();
            assert!(e.contains(want), "{doc}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn not_json_points_at_the_member_being_read() {
        for (doc, want) in [
            ("{\n  \"flags\": {,\n}", "/flags"),
            (
                r#"{"flags":{"a":{"state":"ENABLED","variants":{"on":true "off":false}}}}"#,
                "/flags/a/variants/on",
            ),
            (
                r#"{"flags":{"a/b":{"state":ENABLED}}}"#,
                "/flags/a~1b/state",
            ),
            (r#"{"flags":[{"key":"x"},{"key":"y",}]}"#, "/flags/1"),
            (r#"{"flags":{"q\"":{"state":}}}"#, "/flags/q\"/state"),
            ("{\"flags\":", "/flags"),
            ("nope", ""),
        ] {
            match err(doc) {
                DocumentError::NotJson { pointer, .. } => assert_eq!(pointer, want, "{doc}"),
                other => panic!("{doc}: unexpected {other:?}"),
            }
        }
        let e = err(r#"{"flags":{"a":{"state":ENABLED}}}"#).to_string();
        assert!(e.ends_with("(in /flags/a/state)"), "{e}");
        assert!(!err("nope").to_string().contains("(in"));
    }

    #[test]
    fn duplicate_members_are_refused_with_a_pointer() {
        for (doc, want) in [
            (r#"{"flags":{},"flags":{}}"#, "/flags"),
            (
                r#"{"flags":{"a":{"state":"ENABLED","variants":{"x":1}},"a":{"state":"DISABLED","variants":{"x":1}}}}"#,
                "/flags/a",
            ),
            (
                r#"{"flags":{"a/b":{"state":"ENABLED","variants":{"x":1,"x":2}}}}"#,
                "/flags/a~1b/variants/x",
            ),
            (
                r#"{"flags":{},"$evaluators":{"e":{"in":[{"k":1,"k":2}]}}}"#,
                "/$evaluators/e/in/0/k",
            ),
        ] {
            match err(doc) {
                DocumentError::Shape { pointer, message } => {
                    assert_eq!(pointer, want, "{doc}");
                    assert!(message.starts_with("duplicate member"), "{message}");
                }
                other => panic!("{doc}: unexpected {other:?}"),
            }
        }
        // The same name in different objects is no duplicate.
        ok(r#"{"flags":{"a":{"state":"ENABLED","variants":{"a":1}}}}"#);
        let fields = serde_json::to_vec(&[
            "f",
            r#"{"state":"ENABLED","state":"DISABLED","variants":{"x":1}}"#,
        ])
        .unwrap();
        let e = parse_hash(&fields, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/flags/f/state: duplicate member"),
            "{e}"
        );
    }

    #[test]
    fn not_json_reports_line_and_column() {
        match err("{\n  \"flags\": {,\n}") {
            DocumentError::NotJson { line, column, .. } => assert_eq!((line, column), (2, 13)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn invalid_utf8_and_size_and_depth_are_refused() {
        assert_eq!(
            parse(b"{\"flags\":\xff}", &Options::default()).unwrap_err(),
            DocumentError::NotUtf8 { offset: 9 }
        );
        let small = Options {
            max_bytes: 10,
            ..Options::default()
        };
        assert!(matches!(
            parse(FLAG.as_bytes(), &small).unwrap_err(),
            DocumentError::TooLarge { limit: 10, .. }
        ));
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(err(&deep).reason(), "not_json");
        assert_eq!(err(r#"{"flags":{},"n":1e400}"#).reason(), "not_json");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,8}".prop_map(Value::from),
        ]
    }

    /// Valid documents with 1-5 flags of random types, metadata and targeting.
    fn document() -> impl Strategy<Value = Value> {
        let flag = (
            prop_oneof![Just("bool"), Just("string"), Just("number")],
            prop::collection::btree_set("[a-z]{1,6}", 1..4),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(prop::collection::btree_map("[a-z]{1,5}", scalar(), 0..3)),
        )
            .prop_map(|(kind, names, enabled, with_default, metadata)| {
                let variants: Map<String, Value> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let v = match kind {
                            "bool" => Value::from(i % 2 == 0),
                            "string" => Value::from(format!("v{i}")),
                            _ => Value::from(i as f64 + 0.5),
                        };
                        (n.clone(), v)
                    })
                    .collect();
                let mut f = serde_json::json!({
                    "state": if enabled { "ENABLED" } else { "DISABLED" },
                    "variants": variants,
                    "targeting": {"if": [{"in": ["@x", {"var": "email"}]}, names.iter().next().unwrap(), null]},
                });
                if with_default {
                    f["defaultVariant"] = Value::from(names.iter().next().unwrap().clone());
                }
                if let Some(m) = metadata {
                    f["metadata"] = serde_json::to_value(m).unwrap();
                }
                f
            });
        prop::collection::btree_map("[a-z][a-z0-9_-]{0,10}", flag, 1..6)
            .prop_map(|flags| serde_json::json!({ "flags": flags }))
    }

    /// Serialises with object keys in reverse order and extra white space.
    fn shuffled(v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{} :  {}", Value::from(k.clone()), shuffled(v)))
                    .collect();
                format!("{{ {} }}", parts.join(" ,\n "))
            }
            Value::Array(a) => format!(
                "[ {} ]",
                a.iter().map(shuffled).collect::<Vec<_>>().join(" , ")
            ),
            other => other.to_string(),
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, &Options::default());
        }

        #[test]
        fn never_panics_on_arbitrary_json(s in "[\\[\\]{}\",:a-z0-9 .eE+-]{0,200}") {
            let _ = parse(s.as_bytes(), &Options::default());
        }

        #[test]
        fn canonical_form_is_a_fixed_point(doc in document()) {
            let first = parse(doc.to_string().as_bytes(), &Options::default()).unwrap();
            let again = parse(first.canonical.as_bytes(), &Options::default()).unwrap();
            prop_assert_eq!(&first.canonical, &again.canonical);
            prop_assert_eq!(first.digest, again.digest);
        }

        #[test]
        fn formatting_never_changes_the_digest(doc in document()) {
            let a = parse(doc.to_string().as_bytes(), &Options::default()).unwrap();
            let b = parse(shuffled(&doc).as_bytes(), &Options::default()).unwrap();
            prop_assert_eq!(a.digest, b.digest);
        }

        #[test]
        fn a_default_variant_outside_the_variants_is_always_refused(doc in document(), bogus in "[A-Z]{1,6}") {
            let mut doc = doc;
            let name = doc["flags"].as_object().unwrap().keys().next().unwrap().clone();
            doc["flags"][&name]["defaultVariant"] = Value::from(bogus);
            let e = parse(doc.to_string().as_bytes(), &Options::default()).unwrap_err();
            prop_assert_eq!(e.reason(), "invalid_shape");
        }

        #[test]
        fn the_array_form_normalises_to_the_map_form(doc in document()) {
            let map_form = parse(doc.to_string().as_bytes(), &Options::default()).unwrap();
            let flags: Vec<Value> = doc["flags"].as_object().unwrap().iter().map(|(k, f)| {
                let mut f = f.clone();
                f["key"] = Value::from(k.clone());
                f
            }).collect();
            let array = serde_json::json!({ "flags": flags });
            let array_form = parse(array.to_string().as_bytes(), &Options::default()).unwrap();
            prop_assert_eq!(map_form.digest, array_form.digest);
        }
    }
}
