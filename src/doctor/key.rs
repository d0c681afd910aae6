//! The flag key itself: exists with the right type, no TTL, size, a valid document.

use super::helpers::reason;
use super::limits::{CLIENT_LIMIT_BYTES, SIZE_WARN};
use crate::finding::{Finding, Level};
use crate::flags;
use crate::redis::{RedisTarget, Storage};
use redis::RedisError;

/// Everything the key checks need, read once.
pub(super) struct KeyFacts {
    /// GET: the value (None: no key) or the error.
    pub(super) value: Result<Option<Vec<u8>>, RedisError>,
    /// TYPE.
    pub(super) kind: Result<String, RedisError>,
    /// PTTL in milliseconds: -2 no key, -1 no TTL.
    pub(super) pttl: Result<i64, RedisError>,
}

pub(super) fn key_exists(target: &RedisTarget, key: &KeyFacts) -> Finding {
    const C: &str = "key";
    let k = &target.key;
    let missing = || {
        Finding::fail(
            C,
            format!(
                "the key {k} does not exist in database {}: there are no flags to serve",
                target.db
            ),
            format!(
                "store the document: redis-cli -n {} -x SET {k} < flags.json",
                target.db
            ),
        )
    };
    let wrong = |t: &str| {
        Finding::fail(
            C,
            format!("the key {k} holds a {t}, not a string"),
            format!("store the flagd JSON document as a string: redis-cli -n {} -x SET {k} < flags.json", target.db),
        )
    };
    if target.storage_of_first() == Storage::Hash {
        return match &key.kind {
            Ok(t) if t == "none" => missing(),
            Ok(t) if t == "hash" => Finding::ok(C, format!("{k} exists and holds a hash (type=hash)")),
            Ok(t) => Finding::fail(
                C,
                format!("the key {k} holds a {t}, not a hash (the URI says type=hash)"),
                "store one field per flag (HSET KEY FLAG JSON), or drop type=hash for a JSON string",
            ),
            Err(e) => Finding::skipped(C, format!("TYPE: {}", reason(e))),
        };
    }
    match &key.kind {
        Ok(t) if t == "none" => missing(),
        Ok(t) if t == "string" => Finding::ok(C, format!("{k} exists and holds a string")),
        Ok(t) => wrong(t),
        // TYPE refused: GET tells as much.
        Err(type_error) => match &key.value {
            Ok(Some(_)) => Finding::ok(C, format!("{k} exists and holds a string")),
            Ok(None) => missing(),
            Err(e) if crate::redis::codes::is_wrong_type(e) => wrong("value of another type"),
            Err(e) => Finding::skipped(
                C,
                format!("TYPE: {}; GET: {}", reason(type_error), reason(e)),
            ),
        },
    }
}

pub(super) fn ttl(target: &RedisTarget, key: &KeyFacts) -> Finding {
    const C: &str = "ttl";
    match &key.pttl {
        Err(e) => Finding::skipped(C, format!("PTTL: {}", reason(e))),
        Ok(-2) => Finding::new(C, Level::Skipped, "no key, so no TTL to check"),
        Ok(ms) if *ms < 0 => Finding::ok(C, "no TTL: the key does not expire"),
        Ok(ms) => Finding::warn(
            C,
            format!(
                "the key expires in {} s: a TTL on a flag key is almost always a mistake (when it expires, \
                 the flags are gone)",
                (ms + 999) / 1000
            ),
            format!(
                "PERSIST {}, and stop writing it with EX/PX/EXPIRE",
                target.key
            ),
        ),
    }
}

pub(super) fn size(key: &KeyFacts, documents: &flags::Options) -> Finding {
    const C: &str = "size";
    let limit = documents.max_bytes.min(CLIENT_LIMIT_BYTES);
    match &key.value {
        Err(e) => Finding::skipped(C, format!("GET: {}", reason(e))),
        Ok(None) => Finding::new(C, Level::Skipped, "no key, so no size to check"),
        Ok(Some(v)) if v.len() > limit => Finding::fail(
            C,
            format!(
                "{} bytes, above the limit of {limit} bytes (--max-payload-bytes, and 4 MiB for gRPC clients): \
                 the service refuses it",
                v.len()
            ),
            "shrink the document (fewer or smaller flags), or raise --max-payload-bytes if every client accepts larger messages",
        ),
        Ok(Some(v)) if v.len() as f64 > SIZE_WARN * limit as f64 => Finding::warn(
            C,
            format!(
                "{} bytes: {:.0}% of the {limit}-byte limit",
                v.len(),
                100.0 * v.len() as f64 / limit as f64
            ),
            "shrink the document before it reaches the limit (it would then be refused)",
        ),
        Ok(Some(v)) => Finding::ok(C, format!("{} bytes (limit {limit})", v.len())),
    }
}

pub(super) fn document(key: &KeyFacts, documents: &flags::Options, storage: Storage) -> Finding {
    const C: &str = "document";
    match &key.value {
        Err(e) => Finding::skipped(C, format!("GET: {}", reason(e))),
        Ok(None) => Finding::new(C, Level::Skipped, "no key, so no document to validate"),
        Ok(Some(v)) if v.len() > documents.max_bytes.min(CLIENT_LIMIT_BYTES) => Finding::new(
            C,
            Level::Skipped,
            "not validated: larger than the limit (see size)",
        ),
        Ok(Some(v)) => match match storage {
            Storage::String => flags::parse(v, documents),
            Storage::Hash => flags::parse_hash(v, documents),
        } {
            Ok(doc) => Finding::ok(
                C,
                format!(
                    "valid: {} flag(s), digest {}",
                    doc.flag_count,
                    doc.digest.short()
                ),
            ),
            Err(e) => Finding::fail(
                C,
                format!("the service refuses this document: {e}"),
                "fix the document; check a file before storing it with: flagd-redis-sync validate FILE",
            ),
        },
    }
}
