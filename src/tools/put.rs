//! `flagd-redis-sync put --redis-uri URI FILE`: validates a flag document exactly as the
//! service will, then stores it in the key with one `SET` (atomic: the service, and every
//! client, sees the old document or the new one, never a mix). Needs only `SET` (and `GET`
//! plus `EVAL` with `--if-digest`), never `CONFIG`. With `type=hash` in the URI, the
//! document is stored as one field per flag in one MULTI/EXEC (see `put_hash.rs`).
//!
//! Exit codes: 0 stored; 1 refused (invalid document, or `--if-digest` did not match);
//! 2 the file cannot be read; 3 Redis failed (unreachable, authentication, NOPERM);
//! 64 bad command line (`--redis-uri`).

use super::put_hash::{self, StoreError};
use crate::flags::{self, Digest};
use crate::redis::{RedisTarget, Storage};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// Sets the key only if it still holds exactly the bytes read before (compare-and-set).
const CAS_SCRIPT: &str = r#"local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1"#;

/// What to store where, checked by the command line.
#[derive(Debug, Clone)]
pub struct Request {
    /// The first key is the one written (its `type=` says how).
    pub target: RedisTarget,
    /// For connecting and for each reply.
    pub timeout: std::time::Duration,
    /// The flag document (`-`: standard input).
    pub file: PathBuf,
    /// `--if-digest`: store only over a document with this digest (prefix).
    pub if_digest: Option<String>,
    /// How the document is judged (as the service's options).
    pub documents: flags::Options,
}

/// Why `put` stored nothing; the variant decides the exit code.
#[derive(Debug, thiserror::Error)]
enum PutError {
    #[error("--if-digest: expected 12 to 64 hex digits of a SHA-256 digest, got {0:?}")]
    BadDigest(String),
    #[error("{name}: cannot read: {source}")]
    Unreadable {
        name: String,
        source: std::io::Error,
    },
    /// The same line `validate` prints for a refused document.
    #[error("{name}: refused: {source}")]
    Invalid {
        name: String,
        source: flags::DocumentError,
    },
    /// Valid, but not storable as the key's type asks (`type=hash`).
    #[error("{name}: refused: {source}")]
    Unstorable { name: String, source: StoreError },
    /// The key is not as expected (type, `--if-digest`, changed meanwhile).
    #[error(transparent)]
    Conflict(StoreError),
    #[error("redis {target}: {source}")]
    Redis {
        target: String,
        source: redis::RedisError,
    },
}

impl PutError {
    fn code(&self) -> u8 {
        match self {
            PutError::Invalid { .. } | PutError::Unstorable { .. } | PutError::Conflict(_) => 1,
            PutError::Unreadable { .. } => 2,
            PutError::Redis { .. } => 3,
            PutError::BadDigest(_) => super::EX_USAGE,
        }
    }
}

/// Runs `put`; prints the stored digest on success, one line on stderr otherwise.
pub fn main(args: &Request) -> ExitCode {
    super::block_on("put", async {
        match run(args).await {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(e.code())
            }
        }
    })
}

async fn run(args: &Request) -> Result<String, PutError> {
    let target = &args.target;
    if let Some(want) = &args.if_digest {
        if !is_digest_arg(want) {
            return Err(PutError::BadDigest(want.clone()));
        }
    }
    let name = args.file.display().to_string();
    let bytes = if name == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).map(|_| b)
    } else {
        std::fs::read(&args.file)
    }
    .map_err(|source| PutError::Unreadable {
        name: name.clone(),
        source,
    })?;
    let opts = args.documents;
    let doc = flags::parse(&bytes, &opts).map_err(|source| PutError::Invalid {
        name: name.clone(),
        source,
    })?;

    // What is stored, and the document the service will serve from it.
    let hash_fields = match target.storage_of_first() {
        Storage::String => None,
        Storage::Hash => Some(put_hash::fields(&doc).map_err(|e| refused(&name, e))?),
    };
    let served = match &hash_fields {
        None => doc,
        Some(fields) => put_hash::served(fields, &opts).map_err(|e| refused(&name, e))?,
    };

    let redis_err = |source: redis::RedisError| PutError::Redis {
        target: target.to_string(),
        source,
    };
    let store_err = |e: StoreError| match e {
        StoreError::Redis(source) => redis_err(source),
        other => PutError::Conflict(other),
    };
    // As the service connects: the node that holds the key (Sentinel master, Cluster
    // slot owner), RESP3, the CA and client certificate files read now.
    let (mut con, _) =
        crate::redis::topology::connect_to_key(target, &target.key, args.timeout, None)
            .await
            .map_err(redis_err)?;

    if let Some(fields) = &hash_fields {
        put_hash::store(
            &mut con,
            &target.key,
            fields,
            args.if_digest.as_deref(),
            &opts,
        )
        .await
        .map_err(store_err)?;
        return Ok(stored_line(&name, target, &served, bytes.len()));
    }
    match &args.if_digest {
        None => {
            redis::cmd("SET")
                .arg(&target.key)
                .arg(&bytes)
                .query_async::<()>(&mut con)
                .await
                .map_err(redis_err)?;
        }
        Some(want) => {
            let current: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&target.key)
                .query_async(&mut con)
                .await
                .map_err(redis_err)?;
            let current = current
                .ok_or_else(|| StoreError::Missing(target.key.clone(), want.clone()))
                .map_err(store_err)?;
            let have = digest_of_stored(&current, &opts);
            if !matches_digest(&have, want) {
                return Err(store_err(StoreError::DigestMismatch {
                    key: target.key.clone(),
                    have,
                    want: want.clone(),
                }));
            }
            let stored: i64 = redis::Script::new(CAS_SCRIPT)
                .key(&target.key)
                .arg(&current)
                .arg(&bytes)
                .invoke_async(&mut con)
                .await
                .map_err(redis_err)?;
            if stored != 1 {
                return Err(store_err(StoreError::Changed(target.key.clone())));
            }
        }
    }
    Ok(stored_line(&name, target, &served, bytes.len()))
}

fn refused(name: &str, source: StoreError) -> PutError {
    PutError::Unstorable {
        name: name.to_string(),
        source,
    }
}

/// The success line: where, how many flags, the digest clients will get.
fn stored_line(name: &str, target: &RedisTarget, served: &flags::Document, bytes: usize) -> String {
    format!(
        "stored {name} in key {:?}: {} flags, {bytes} bytes, digest {}",
        target.key, served.flag_count, served.digest
    )
}

/// The digest the service would give the stored value: of its canonical form when it is
/// valid, of its raw bytes otherwise (so a refused document can still be replaced).
fn digest_of_stored(current: &[u8], opts: &flags::Options) -> String {
    match flags::parse(current, opts) {
        Ok(doc) => doc.digest.to_string(),
        Err(_) => Digest::of(current).to_string(),
    }
}

fn is_digest_arg(want: &str) -> bool {
    want.len() >= 12 && want.len() <= 64 && want.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(super) fn matches_digest(have: &str, want: &str) -> bool {
    have.starts_with(&want.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_arguments() {
        assert!(is_digest_arg("0123456789ab"));
        assert!(is_digest_arg(&"a".repeat(64)));
        assert!(!is_digest_arg("0123456789a"));
        assert!(!is_digest_arg("0123456789ag"));
        assert!(!is_digest_arg(&"a".repeat(65)));
        assert!(matches_digest("abcdef0123456789", "ABCDEF012345"));
        assert!(!matches_digest("abcdef0123456789", "abcdef012346"));
    }

    #[test]
    fn stored_digest_is_the_served_digest() {
        let opts = flags::Options::default();
        let a =
            br#"{"flags":{"f":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}"#;
        let served = flags::parse(a, &opts).unwrap().digest.to_string();
        assert_eq!(digest_of_stored(a, &opts), served);
        assert_eq!(
            digest_of_stored(b"not json", &opts),
            Digest::of(b"not json").to_string()
        );
    }
}
