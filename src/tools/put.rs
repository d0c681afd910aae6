//! `flagd-redis-sync put --redis-uri URI FILE`: validates a flag document exactly as the
//! service will, then stores it in the key with one `SET` (atomic: the service, and every
//! client, sees the old document or the new one, never a mix). Needs only `SET` (and `GET`
//! plus `EVAL` with `--if-digest`), never `CONFIG`. With `type=hash` in the URI, the
//! document is stored as one field per flag in one MULTI/EXEC (see `put_hash.rs`).
//!
//! Exit codes: 0 stored; 1 refused (invalid document); 2 the file cannot be read; 3 Redis
//! failed (unreachable, authentication, NOPERM); 4 stored, but `--wait` saw streams still
//! behind at `--wait-timeout`; 5 a service's management port failed (`--restore`); 6 the
//! key is not as expected, nothing stored (compare-and-set conflict: `--if-digest` did not
//! match, the key is missing or of another type, or it changed while storing); 64 bad
//! command line (`--redis-uri`, `--service`).

use super::fleet_client::FleetClient;
use super::fleet_client::FleetClientError;
use super::store::{self, StoreError};
use super::wait::WaitError;
use crate::flags;
use crate::redis::{RedisTarget, Storage};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    /// The first key is the one written (its `type=` says how).
    pub target: RedisTarget,
    /// For connecting and for each reply.
    pub timeout: Duration,
    /// The flag document (`-`: standard input); None with `restore`.
    pub file: Option<PathBuf>,
    /// `--if-digest`: store only over a document with this digest (prefix).
    pub if_digest: Option<String>,
    /// `--service`: management ports to wait on or restore from.
    pub services: Vec<String>,
    /// `--wait`: after storing, until every service's clients have it.
    pub wait: bool,
    /// `--wait-timeout`.
    pub wait_timeout: Duration,
    /// `--restore DIGEST`: store the document a service remembers instead of a file.
    pub restore: Option<String>,
    /// How the document is judged (as the service's options).
    pub documents: flags::Options,
}

/// Exit code of a compare-and-set conflict: the key is not what the caller expected, so a
/// script can read it again and retry, unlike a refused document (1).
const EX_CONFLICT: u8 = 6;

/// Why `put` stored nothing; the variant decides the exit code.
#[derive(Debug, thiserror::Error)]
enum PutError {
    #[error("--if-digest: expected 12 to 64 hex digits of a SHA-256 digest, got {0:?}")]
    BadDigest(String),
    #[error("give a FILE or --restore DIGEST")]
    NoDocument,
    #[error("{name}: cannot read: {source}")]
    Unreadable {
        name: String,
        source: std::io::Error,
    },
    /// The same lines `validate` prints for a refused document (one per problem).
    #[error("{}", refused_lines(name, source))]
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
    /// A `--service` that cannot be used (resolved before anything is stored).
    #[error(transparent)]
    BadService(WaitError),
    /// Stored, but not every client had it within --wait-timeout.
    #[error("{stored}\nbut {source}")]
    NotConverged { stored: String, source: WaitError },
    /// A service's management port failed (fetching the document to restore).
    #[error("cannot fetch the document to restore: {0}")]
    Service(#[source] FleetClientError),
}

impl PutError {
    fn code(&self) -> u8 {
        match self {
            PutError::Invalid { .. } | PutError::Unstorable { .. } => 1,
            PutError::Conflict(_) => EX_CONFLICT,
            PutError::Unreadable { .. } => 2,
            PutError::Redis { .. } => 3,
            PutError::BadDigest(_) | PutError::NoDocument | PutError::BadService(_) => {
                super::EX_USAGE
            }
            PutError::NotConverged { .. } => 4,
            PutError::Service(_) => 5,
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
    if let Some(want) = args.if_digest.iter().chain(&args.restore).next() {
        if !is_digest_arg(want) {
            return Err(PutError::BadDigest(want.clone()));
        }
    }
    // Every --service is checked (and resolved) before anything is stored.
    let services = super::wait::resolve(&args.services)
        .await
        .map_err(PutError::BadService)?;
    let fleet = FleetClient::default();
    let (name, bytes, if_digest) = match (&args.restore, &args.file) {
        (Some(digest), _) => {
            let r = super::restore::fetch(&fleet, &services[0], digest)
                .await
                .map_err(PutError::Service)?;
            (r.name, r.bytes, args.if_digest.clone().or(r.expected))
        }
        (None, Some(file)) => {
            let name = file.display().to_string();
            let bytes =
                crate::files::read_document(file, args.documents.max_bytes).map_err(|source| {
                    PutError::Unreadable {
                        name: name.clone(),
                        source,
                    }
                })?;
            (name, bytes, args.if_digest.clone())
        }
        (None, None) => return Err(PutError::NoDocument),
    };
    let opts = args.documents;
    let doc = flags::parse(&bytes, &opts).map_err(|source| PutError::Invalid {
        name: name.clone(),
        source,
    })?;
    for line in doc.warnings.lines() {
        eprintln!("{name}: warning (strict would refuse): {line}");
    }

    // What is stored, and the document the service will serve from it.
    let hash_fields = match target.storage_of_first() {
        Storage::String => None,
        Storage::Hash => Some(store::fields(&doc).map_err(|e| refused(&name, e))?),
    };
    let served = match &hash_fields {
        None => doc,
        Some(fields) => store::served(fields, &opts).map_err(|e| refused(&name, e))?,
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
        store::store(&mut con, &target.key, fields, if_digest.as_deref(), &opts)
            .await
            .map_err(store_err)?;
    } else {
        store::store_string(&mut con, target, &bytes, if_digest.as_deref(), &opts)
            .await
            .map_err(store_err)?;
    }
    let stored = stored_line(&name, target, &served, bytes.len());
    if !args.wait {
        return Ok(stored);
    }
    let digest = served.digest.to_string();
    match super::wait::wait(&fleet, &services, &digest, args.wait_timeout).await {
        Ok(c) => Ok(format!(
            "{stored}\nevery client has it: {} streams on {} services in {:.3}s",
            c.streams,
            c.services,
            c.elapsed.as_secs_f64()
        )),
        Err(source) => Err(PutError::NotConverged { stored, source }),
    }
}

fn refused_lines(name: &str, e: &flags::DocumentError) -> String {
    let lines: Vec<String> = e
        .lines()
        .iter()
        .map(|l| format!("{name}: refused: {l}"))
        .collect();
    lines.join("\n")
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

fn is_digest_arg(want: &str) -> bool {
    want.len() >= 12 && want.len() <= 64 && want.bytes().all(|b| b.is_ascii_hexdigit())
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
        assert!(store::matches_digest("abcdef0123456789", "ABCDEF012345"));
        assert!(!store::matches_digest("abcdef0123456789", "abcdef012346"));
    }

    #[test]
    fn stored_digest_is_the_served_digest() {
        let opts = flags::Options::default();
        let a =
            br#"{"flags":{"f":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}"#;
        let served = flags::parse(a, &opts).unwrap().digest.to_string();
        assert_eq!(store::digest_of_stored(a, &opts), served);
        assert_eq!(
            store::digest_of_stored(b"not json", &opts),
            flags::Digest::of(b"not json").to_string()
        );
    }
}
