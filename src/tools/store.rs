//! How `put` writes a document. A string key: one `SET`, or with `--if-digest` a
//! compare-and-set script (`GET`, `EVAL`). A `type=hash` key: the document becomes one
//! field per flag plus
//! `$evaluators` and `$metadata` (the layout the service reads, see
//! [`flags::parse_hash`]), written in one MULTI/EXEC that also deletes the fields of
//! flags the new document no longer has. WATCH makes the read-compare-write safe: if the
//! key changes between the read (for `--if-digest`, and to know which fields to delete)
//! and EXEC, nothing is written.
//!
//! Needs WATCH, TYPE, HGETALL, MULTI, HDEL, HSET, EXEC on the key (no CONFIG, no EVAL).

use crate::flags::{self, Digest, Document};
use crate::redis::reply::hash_field_array;
use crate::redis::RedisTarget;
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde_json::Value as Json;

/// Sets the key only if it still holds exactly the bytes read before (compare-and-set).
const CAS_SCRIPT: &str = r#"local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1"#;

/// What to store where, checked by the command line.
/// Attempts when the key changes under a `put` without `--if-digest` (someone else wrote
/// in between): the last writer wins, as with SET, but never a mix of two documents.
const ATTEMPTS: usize = 3;

/// Why a document cannot be stored (as a hash, or over a `--if-digest`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The document has something a hash of flag fields cannot hold.
    #[error("type=hash stores one field per flag: {0}")]
    Unrepresentable(String),
    /// The key holds another Redis type; nothing was changed.
    #[error("key {key:?} holds a Redis {found}, not a hash (type=hash): not stored; delete it or use the matching type=")]
    WrongType { key: String, found: String },
    #[error("key {0:?} does not exist, so its digest cannot be {1}; not stored")]
    Missing(String, String),
    #[error("key {key:?} holds digest {have}, not {want}: someone changed it; not stored")]
    DigestMismatch {
        key: String,
        have: String,
        want: String,
    },
    #[error("key {0:?} changed while storing; not stored (read it again)")]
    Changed(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// The hash fields for a validated document: `(field, JSON)` per flag, then
/// `$evaluators` and `$metadata` when present. `$schema` (an editor's hint) is dropped.
pub fn fields(doc: &Document) -> Result<Vec<(String, String)>, StoreError> {
    let bad = |m: String| StoreError::Unrepresentable(m);
    let Json::Object(top) = &doc.value else {
        return Err(bad("the document is not a JSON object".into()));
    };
    let mut out = Vec::new();
    for (name, value) in top {
        match name.as_str() {
            "flags" => {
                let Json::Object(flags) = value else {
                    return Err(bad(
                        "/flags must be an object (map form); drop --no-normalize".into(),
                    ));
                };
                for (flag, body) in flags {
                    out.push((flag.clone(), body.to_string()));
                }
            }
            "$evaluators" => out.push((flags::HASH_EVALUATORS_FIELD.into(), value.to_string())),
            "metadata" => out.push((flags::HASH_METADATA_FIELD.into(), value.to_string())),
            "$schema" => {}
            other => {
                return Err(bad(format!(
                    "top-level {other:?} has no place in the hash (flags, $evaluators and metadata only)"
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(bad(
            "an empty flag set would be an empty hash, which Redis does not keep (the key would \
             be gone); use type=string for an empty document"
                .into(),
        ));
    }
    Ok(out)
}

/// The document the service will assemble from these fields (so the digest `put` prints
/// is the one clients get).
pub fn served(fields: &[(String, String)], opts: &flags::Options) -> Result<Document, StoreError> {
    flags::parse_hash(&hash_field_array(fields), opts)
        .map_err(|e| StoreError::Unrepresentable(format!("the hash would be refused: {e}")))
}

/// Writes `fields` as the whole hash at `key`, atomically; with `if_digest`, only if the
/// key's current document has that digest (prefix).
pub async fn store(
    con: &mut MultiplexedConnection,
    key: &str,
    fields: &[(String, String)],
    if_digest: Option<&str>,
    opts: &flags::Options,
) -> Result<(), StoreError> {
    for _ in 0..ATTEMPTS {
        redis::cmd("WATCH").arg(key).exec_async(con).await?;
        let checked = check_current(con, key, if_digest, opts).await;
        let current = match checked {
            Ok(c) => c,
            Err(e) => {
                let _ = redis::cmd("UNWATCH").exec_async(con).await;
                return Err(e);
            }
        };
        let removed: Vec<&str> = current
            .iter()
            .map(|(f, _)| f.as_str())
            .filter(|f| !fields.iter().any(|(n, _)| n == f))
            .collect();
        let mut tx = redis::pipe();
        tx.atomic();
        if !removed.is_empty() {
            tx.cmd("HDEL").arg(key).arg(&removed);
        }
        tx.cmd("HSET").arg(key);
        for (f, v) in fields {
            tx.arg(f).arg(v);
        }
        // EXEC answers nil when the watched key changed: nothing was written.
        let done: Option<Vec<Value>> = tx.query_async(con).await?;
        if done.is_some() {
            return Ok(());
        }
        if if_digest.is_some() {
            break;
        }
    }
    Err(StoreError::Changed(key.to_string()))
}

/// The key's current fields, after checking its type and, with `if_digest`, its digest.
async fn check_current(
    con: &mut MultiplexedConnection,
    key: &str,
    if_digest: Option<&str>,
    opts: &flags::Options,
) -> Result<Vec<(String, String)>, StoreError> {
    let found: String = redis::cmd("TYPE").arg(key).query_async(con).await?;
    if found != "hash" && found != "none" {
        return Err(StoreError::WrongType {
            key: key.to_string(),
            found,
        });
    }
    let current: Vec<(String, String)> = redis::cmd("HGETALL").arg(key).query_async(con).await?;
    if let Some(want) = if_digest {
        if current.is_empty() {
            return Err(StoreError::Missing(key.to_string(), want.to_string()));
        }
        let raw = hash_field_array(&current);
        let have = match flags::parse_hash(&raw, opts) {
            Ok(doc) => doc.digest.to_string(),
            Err(_) => Digest::of(&raw).to_string(),
        };
        if !matches_digest(&have, want) {
            return Err(StoreError::DigestMismatch {
                key: key.to_string(),
                have,
                want: want.to_string(),
            });
        }
    }
    Ok(current)
}

/// Stores a string document: one SET, or with `if_digest` a compare-and-set.
pub async fn store_string(
    con: &mut redis::aio::MultiplexedConnection,
    target: &RedisTarget,
    bytes: &[u8],
    if_digest: Option<&str>,
    opts: &flags::Options,
) -> Result<(), StoreError> {
    match if_digest {
        None => {
            redis::cmd("SET")
                .arg(&target.key)
                .arg(bytes)
                .exec_async(con)
                .await?;
        }
        Some(want) => {
            let current: Option<Vec<u8>> =
                redis::cmd("GET").arg(&target.key).query_async(con).await?;
            let current =
                current.ok_or_else(|| StoreError::Missing(target.key.clone(), want.into()))?;
            let have = digest_of_stored(&current, opts);
            if !matches_digest(&have, want) {
                return Err(StoreError::DigestMismatch {
                    key: target.key.clone(),
                    have,
                    want: want.into(),
                });
            }
            let stored: i64 = redis::Script::new(CAS_SCRIPT)
                .key(&target.key)
                .arg(&current)
                .arg(bytes)
                .invoke_async(con)
                .await?;
            if stored != 1 {
                return Err(StoreError::Changed(target.key.clone()));
            }
        }
    }
    Ok(())
}

/// The digest the service would give the stored value: of its canonical form when it is
/// valid, of its raw bytes otherwise (so a refused document can still be replaced).
pub fn digest_of_stored(current: &[u8], opts: &flags::Options) -> String {
    match flags::parse(current, opts) {
        Ok(doc) => doc.digest.to_string(),
        Err(_) => Digest::of(current).to_string(),
    }
}

/// Whether digest `have` starts with the `--if-digest` prefix `want` (any case).
pub fn matches_digest(have: &str, want: &str) -> bool {
    have.starts_with(&want.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_becomes_one_field_per_flag_and_back() {
        let opts = flags::Options::default();
        let text = br#"{"$schema":"https://flagd.dev/schema/v0/flags.json",
            "flags":{"a":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
                     "b":{"state":"DISABLED","variants":{"x":"1"},"defaultVariant":"x"}},
            "$evaluators":{"r":{"in":["x","y"]}},"metadata":{"flagSetId":"s"}}"#;
        let doc = flags::parse(text, &opts).unwrap();
        let f = fields(&doc).unwrap();
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"a") && names.contains(&"b"), "{names:?}");
        assert!(
            names.contains(&"$evaluators") && names.contains(&"$metadata"),
            "{names:?}"
        );
        assert!(!names.contains(&"$schema"), "{names:?}");
        // What the service serves from the hash is the document without $schema.
        let served = served(&f, &opts).unwrap();
        assert_eq!(served.flag_count, 2);
        assert_eq!(served.value["metadata"]["flagSetId"], "s");
        assert_eq!(served.value["$evaluators"]["r"]["in"][1], "y");
    }

    #[test]
    fn what_a_hash_cannot_hold_is_refused() {
        let opts = flags::Options::default();
        let empty = flags::parse(br#"{"flags":{}}"#, &opts).unwrap();
        assert!(matches!(
            fields(&empty),
            Err(StoreError::Unrepresentable(_))
        ));
    }
}
