//! The Redis options every command that talks to Redis takes (the service, `put`,
//! `doctor`): one clap group, flattened into each, so the URI forms, the password and
//! TLS files and the timeout mean the same everywhere and build the target the same way.

use super::error::TargetError;
use super::target::{RedisTarget, RedisTls};
use clap::builder::TypedValueParser as _;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Where the flags live: redis://[user:password@]host[:port][/db]?key=NAME, rediss://
    /// for TLS, unix:///path/to/redis.sock?db=N&key=NAME,
    /// redis+sentinel://host1:26379,host2:26379/MASTER/DB?key=NAME or
    /// redis+cluster://host1:6379,host2:6379/?key=NAME (rediss+sentinel://,
    /// rediss+cluster:// for TLS). The key must hold a flagd JSON document (a string; with
    /// type=hash, a hash of one field per flag); key= may repeat. Keep the password out of
    /// the URI (process lists show it): use REDIS_PASSWORD or --redis-password-file.
    #[arg(long, env = "REDIS_URI", required = true, hide_env_values = true)]
    pub redis_uri: Option<String>,

    /// File holding the Redis password (trailing newline ignored); replaces any password in
    /// the URI. The REDIS_PASSWORD environment variable does the same (give only one).
    #[arg(long, env = "REDIS_PASSWORD_FILE", value_name = "FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// PEM CA certificate(s) that signed the Redis server's certificate (rediss… URIs
    /// only); default: the system's trusted roots.
    #[arg(long, env = "REDIS_CA_PATH", value_name = "FILE")]
    pub redis_ca_path: Option<PathBuf>,

    /// PEM client certificate for Redis servers that require one (rediss… URIs only; needs
    /// --redis-key-path). Read again at each reconnect.
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

    /// DEVELOPMENT ONLY: accept any certificate from the Redis server (self-signed, expired,
    /// another host's), so anyone on the network path can pose as Redis. Logged loudly.
    #[arg(long, env = "REDIS_TLS_INSECURE")]
    pub redis_tls_insecure: bool,

    /// Seconds allowed to connect to Redis and for any reply.
    #[arg(long, env = "REDIS_TIMEOUT", allow_negative_numbers = true, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=300).map(|s| s as u64))]
    pub redis_timeout: u64,
}

impl RedisArgs {
    /// `--redis-timeout`.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.redis_timeout)
    }

    /// The target: the URI (its `key=` may be left out; see [`RedisTarget::require_key`]),
    /// the password from `--redis-password-file` or `REDIS_PASSWORD` (taken from `env`),
    /// the TLS files, each checked readable now so a typo is a start-up error naming the
    /// option.
    pub fn target(&self, env: impl Fn(&str) -> Option<String>) -> Result<RedisTarget, TargetError> {
        let uri = self
            .redis_uri
            .as_deref()
            .ok_or_else(|| TargetError::Uri("required (or set REDIS_URI)".into()))?;
        let mut target = RedisTarget::parse_keys_optional(uri)?;
        match (&self.redis_password_file, env("REDIS_PASSWORD")) {
            (Some(_), Some(_)) => return Err(TargetError::TwoPasswords),
            (Some(path), None) => target.password = Some(password_file(path)?),
            (None, Some(pw)) if !pw.is_empty() => target.password = Some(pw),
            _ => {}
        }
        target.tls = self.tls(&target)?;
        Ok(target)
    }

    /// The TLS options, which only a TLS target may use.
    fn tls(&self, target: &RedisTarget) -> Result<RedisTls, TargetError> {
        let tls = RedisTls {
            ca: self.redis_ca_path.clone(),
            client: self
                .redis_cert_path
                .clone()
                .zip(self.redis_key_path.clone()),
            insecure: self.redis_tls_insecure,
        };
        if !target.addr.is_tls() && tls != RedisTls::default() {
            return Err(TargetError::TlsWithoutRediss);
        }
        if let Some(ca) = &tls.ca {
            readable("--redis-ca-path", ca)?;
        }
        if let Some((cert, key)) = &tls.client {
            readable("--redis-cert-path", cert)?;
            readable("--redis-key-path", key)?;
        }
        Ok(tls)
    }
}

/// The password in a `--redis-password-file`, without its trailing newline.
fn password_file(path: &Path) -> Result<String, TargetError> {
    let text = crate::files::read_secret_string(path).map_err(|source| TargetError::File {
        flag: "--redis-password-file",
        path: path.display().to_string(),
        source,
    })?;
    let pw = text.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        return Err(TargetError::EmptyPasswordFile(path.display().to_string()));
    }
    Ok(pw.to_string())
}

/// Checks that the file an option names can be opened.
pub fn readable(flag: &'static str, path: &Path) -> Result<(), TargetError> {
    crate::files::read_secret(path)
        .map(drop)
        .map_err(|source| TargetError::File {
            flag,
            path: path.display().to_string(),
            source,
        })
}
