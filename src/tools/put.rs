//! `flagd-redis-sync put --redis-uri URI FILE`: validates a flag document exactly as the
//! service will, then stores it in the key with one `SET` (atomic: the service, and every
//! client, sees the old document or the new one, never a mix). Needs only `SET` (and `GET`
//! plus `EVAL` with `--if-digest`), never `CONFIG`.
//!
//! Exit codes: 0 stored; 1 refused (invalid document, or `--if-digest` did not match);
//! 2 the file cannot be read; 3 Redis failed (unreachable, authentication, NOPERM);
//! 4 stored, but `--wait` saw streams still behind at `--wait-timeout`; 5 a service's
//! management port failed (`--restore`); 64 bad command line (`--redis-uri`, `--service`).

use crate::config::{RedisAddr, RedisTarget, RedisTls};
use crate::flags::{self, Digest};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Sets the key only if it still holds exactly the bytes read before (compare-and-set).
const CAS_SCRIPT: &str = r#"local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1"#;

#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// Where to store it, as for the service: redis://[user:password@]host[:port][/db]?key=NAME,
    /// rediss:// or unix:///path?key=NAME.
    #[arg(long, env = "REDIS_URI", hide_env_values = true)]
    pub redis_uri: String,

    /// File holding the Redis password (trailing newline ignored); replaces any password in
    /// the URI. The REDIS_PASSWORD environment variable does the same (give only one).
    #[arg(long, env = "REDIS_PASSWORD_FILE", value_name = "FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// PEM CA certificate(s) that signed the Redis server's certificate (rediss:// only);
    /// default: the system's trusted roots.
    #[arg(long, env = "REDIS_CA_PATH", value_name = "FILE")]
    pub redis_ca_path: Option<PathBuf>,

    /// PEM client certificate for Redis servers that require one (rediss:// only).
    #[arg(
        long,
        env = "REDIS_CERT_PATH",
        value_name = "FILE",
        requires = "redis_key_path"
    )]
    pub redis_cert_path: Option<PathBuf>,

    /// PEM private key for --redis-cert-path.
    #[arg(
        long,
        env = "REDIS_KEY_PATH",
        value_name = "FILE",
        requires = "redis_cert_path"
    )]
    pub redis_key_path: Option<PathBuf>,

    /// The flag document (`-` reads standard input); not with --restore.
    #[arg(required_unless_present = "restore")]
    pub file: Option<PathBuf>,

    /// `--wait`, `--service`, `--wait-timeout`, `--restore` (src/tools/wait.rs).
    #[command(flatten)]
    pub fleet: super::wait::FleetArgs,

    /// Store only if the key's current document has this digest (the full SHA-256 or a
    /// prefix of at least 12 hex digits, as `/readyz`, `watch` and `put` print it), so two
    /// people editing at once cannot overwrite each other. Needs EVAL.
    #[arg(long, value_name = "SHA256")]
    pub if_digest: Option<String>,

    /// Judge the document as stored, without rewriting it into the map form (as the
    /// service's --no-normalize).
    #[arg(long)]
    pub no_normalize: bool,

    /// Refuse documents larger than this many bytes (as the service's option).
    #[arg(long, default_value_t = flags::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// How strictly documents are judged: strict (flagd's JSON schema, operators, $refs,
    /// variant names in rules) or basic (shape only; strict findings logged as warnings).
    #[arg(long, env = "REDIS_SYNC_VALIDATION", value_enum, default_value_t = crate::flags::Validation::Strict)]
    pub validation: crate::flags::Validation,

    /// Seconds allowed to connect to Redis and for each reply.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub redis_timeout: u64,
}

#[derive(Debug, thiserror::Error)]
enum PutError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unreadable(String),
    #[error("{0}")]
    Redis(String),
    #[error("{0}")]
    Usage(String),
    /// Stored, but not every client had it within --wait-timeout.
    #[error("{0}")]
    NotConverged(String),
    /// A service's management port failed (fetching the document to restore).
    #[error("{0}")]
    Service(String),
}

impl PutError {
    fn code(&self) -> u8 {
        match self {
            PutError::Refused(_) => 1,
            PutError::Unreadable(_) => 2,
            PutError::Redis(_) => 3,
            PutError::Usage(_) => super::EX_USAGE,
            PutError::NotConverged(_) => 4,
            PutError::Service(_) => 5,
        }
    }
}

/// Runs `put`; prints the stored digest on success, one line on stderr otherwise.
pub fn main(args: &PutArgs) -> ExitCode {
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

/// The Redis target with credentials and TLS files as the service takes them.
fn target(args: &PutArgs, env: impl Fn(&str) -> Option<String>) -> Result<RedisTarget, String> {
    let mut target = RedisTarget::parse(&args.redis_uri).map_err(|e| e.to_string())?;
    match (
        &args.redis_password_file,
        env("REDIS_PASSWORD").filter(|p| !p.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(
                "REDIS_PASSWORD and --redis-password-file are both set: give only one".into(),
            )
        }
        (Some(path), None) => {
            let text = crate::files::read_secret_string(path)
                .map_err(|e| format!("--redis-password-file {}: {e}", path.display()))?;
            let pw = text.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                return Err(format!("--redis-password-file {} is empty", path.display()));
            }
            target.password = Some(pw.to_string());
        }
        (None, Some(pw)) => target.password = Some(pw),
        (None, None) => {}
    }
    let tls = RedisTls {
        ca: args.redis_ca_path.clone(),
        client: args
            .redis_cert_path
            .clone()
            .zip(args.redis_key_path.clone()),
        insecure: false,
    };
    let is_tls = matches!(target.addr, RedisAddr::Tcp { tls: true, .. });
    if !is_tls && tls != RedisTls::default() {
        return Err(
            "--redis-ca-path, --redis-cert-path and --redis-key-path need a rediss:// URI (TLS)"
                .into(),
        );
    }
    target.tls = tls;
    Ok(target)
}

async fn run(args: &PutArgs) -> Result<String, PutError> {
    let target = target(args, |k| std::env::var(k).ok()).map_err(PutError::Usage)?;
    if let Some(want) = args.if_digest.iter().chain(&args.fleet.restore).next() {
        check_digest_arg(want).map_err(PutError::Usage)?;
    }
    // Every --service is checked (and resolved) before anything is stored.
    let services = super::wait::resolve(&args.fleet.services)
        .await
        .map_err(|e| PutError::Usage(e.to_string()))?;
    let fleet = super::fleet_client::FleetClient::default();
    let (name, bytes, if_digest) = match (&args.fleet.restore, &args.file) {
        (Some(digest), _) => {
            let r = super::restore::fetch(&fleet, &services[0], digest)
                .await
                .map_err(|e| {
                    PutError::Service(format!("cannot fetch the document to restore: {e}"))
                })?;
            (r.name, r.bytes, args.if_digest.clone().or(r.expected))
        }
        (None, Some(file)) => {
            let name = file.display().to_string();
            let bytes = crate::files::read_document(file, args.max_payload_bytes)
                .map_err(|e| PutError::Unreadable(format!("{name}: cannot read: {e}")))?;
            (name, bytes, args.if_digest.clone())
        }
        (None, None) => return Err(PutError::Usage("give a FILE or --restore DIGEST".into())),
    };
    let opts = flags::Options {
        max_bytes: args.max_payload_bytes,
        normalize: !args.no_normalize,
        validation: args.validation,
    };
    // The same line `validate` prints for a refused document.
    let doc = flags::parse(&bytes, &opts).map_err(|e| {
        let lines: Vec<String> = e
            .lines()
            .iter()
            .map(|l| format!("{name}: refused: {l}"))
            .collect();
        PutError::Refused(lines.join("\n"))
    })?;
    for line in doc.warnings.lines() {
        eprintln!("{name}: warning (strict would refuse): {line}");
    }

    let timeout = Duration::from_secs(args.redis_timeout);
    let redis_err = |e: redis::RedisError| PutError::Redis(format!("redis {target}: {e}"));
    // As the service connects: the node that holds the key (Sentinel master, Cluster
    // slot owner), RESP3, the CA and client certificate files read now.
    let node = crate::source::topology::resolve(&target, &target.key, timeout)
        .await
        .map_err(redis_err)?
        .node;
    let client = node.client().map_err(redis_err)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(redis_err)?;

    match &if_digest {
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
            let current = current.ok_or_else(|| {
                PutError::Refused(format!(
                    "key {:?} does not exist, so its digest cannot be {want}; not stored",
                    target.key
                ))
            })?;
            let have = digest_of_stored(&current, &opts);
            if !matches_digest(&have, want) {
                return Err(PutError::Refused(format!(
                    "key {:?} holds digest {have}, not {want}: someone changed it; not stored",
                    target.key
                )));
            }
            let stored: i64 = redis::Script::new(CAS_SCRIPT)
                .key(&target.key)
                .arg(&current)
                .arg(&bytes)
                .invoke_async(&mut con)
                .await
                .map_err(redis_err)?;
            if stored != 1 {
                return Err(PutError::Refused(format!(
                    "key {:?} changed while storing; not stored (read it again)",
                    target.key
                )));
            }
        }
    }
    let stored = format!(
        "stored {name} in key {:?}: {} flags, {} bytes, digest {}",
        target.key,
        doc.flag_count,
        bytes.len(),
        doc.digest
    );
    if !args.fleet.wait {
        return Ok(stored);
    }
    let timeout = Duration::from_secs(args.fleet.wait_timeout);
    match super::wait::wait(&fleet, &services, &doc.digest.to_string(), timeout).await {
        Ok(c) => Ok(format!(
            "{stored}\nevery client has it: {} streams on {} services in {:.3}s",
            c.streams,
            c.services,
            c.elapsed.as_secs_f64()
        )),
        Err(e) => Err(PutError::NotConverged(format!("{stored}\nbut {e}"))),
    }
}

/// The digest the service would give the stored value: of its canonical form when it is
/// valid, of its raw bytes otherwise (so a refused document can still be replaced).
fn digest_of_stored(current: &[u8], opts: &flags::Options) -> String {
    match flags::parse(current, opts) {
        Ok(doc) => doc.digest.to_string(),
        Err(_) => Digest::of(current).to_string(),
    }
}

fn check_digest_arg(want: &str) -> Result<(), String> {
    let hex = want.len() >= 12 && want.len() <= 64 && want.bytes().all(|b| b.is_ascii_hexdigit());
    if hex {
        Ok(())
    } else {
        Err(format!(
            "--if-digest: expected 12 to 64 hex digits of a SHA-256 digest, got {want:?}"
        ))
    }
}

fn matches_digest(have: &str, want: &str) -> bool {
    have.starts_with(&want.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_arguments() {
        assert!(check_digest_arg("0123456789ab").is_ok());
        assert!(check_digest_arg(&"a".repeat(64)).is_ok());
        assert!(check_digest_arg("0123456789a").is_err());
        assert!(check_digest_arg("0123456789ag").is_err());
        assert!(check_digest_arg(&"a".repeat(65)).is_err());
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
