//! Command line and environment: clap definitions, Redis URI parsing, validation.
//!
//! Every option has an environment variable: the flag's name upper-cased with `_` for
//! `-`, and options that do not start with `redis-` get a `REDIS_SYNC_` prefix
//! (`--redis-uri` -> `REDIS_URI`, `--management-port` -> `REDIS_SYNC_MANAGEMENT_PORT`).
//! Errors are one line a person can act on; they never contain a password.

use crate::redis::args::readable;
use crate::redis::{RedisArgs, RedisTarget, SourceSpec, TargetError};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Serves a flagd flag document kept in Redis to flagd and OpenFeature providers over
/// flagd's gRPC sync protocol, pushing every change as Redis reports it.
#[derive(Debug, Parser)]
#[command(name = "flagd-redis-sync", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check flag documents exactly as the service would. Exit 0: all valid; 1: any
    /// refused; 2: a file cannot be read.
    Validate(ValidateArgs),
    /// Validate a flag document, then store it in the Redis key with one atomic SET.
    /// Exit 0: stored; 1: refused; 2: file unreadable; 3: Redis error; 64: bad URI.
    Put(crate::tools::put::PutArgs),
    /// Follow a sync server as a client does and print a line per document received.
    /// Exit 0: --count reached; 1: the stream could not open or ended.
    Watch(crate::tools::watch::WatchArgs),
    /// Probe a running instance's /readyz (for container health checks). Exit 0: ready;
    /// 1: not ready or unreachable, with the reason on one line.
    Healthcheck(crate::tools::healthcheck::HealthcheckArgs),
    /// Check the Redis behind the service for production readiness (version, persistence,
    /// eviction, TTL, notifications, rights, TLS…). Exit 0: all OK; 1: warnings; 2: failures.
    Doctor(crate::doctor::DoctorArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Flag document files to check (`-` reads standard input).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Check the document as stored, without rewriting it into the map form.
    #[arg(long)]
    pub no_normalize: bool,
    /// Refuse documents larger than this many bytes.
    #[arg(long, default_value_t = crate::flags::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Console,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub redis: RedisArgs,

    /// A further flag source NAME=KEY (repeatable): clients select it with source=NAME
    /// (or a bare NAME); without a selector they get every source merged, later sources
    /// winning a flag-name clash. NAME=KEY;type=hash reads a hash of one field per flag.
    /// The URI's key= values (repeatable) are sources too, named by their key.
    #[arg(long = "source", env = "REDIS_SYNC_SOURCES", value_delimiter = ',')]
    pub sources: Vec<String>,

    /// Seconds between fallback polls of the key. Keyspace notifications push changes at
    /// once; the poll catches what Redis never notifies (FLUSHALL, restarts, resyncs).
    #[arg(long, env = "REDIS_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub redis_interval: u64,

    /// Address the gRPC sync server and the management server bind to (0.0.0.0: every IPv4
    /// interface; 127.0.0.1: this machine only; :: for IPv6).
    #[arg(long, env = "REDIS_SYNC_HOST", default_value = "0.0.0.0")]
    pub redis_sync_host: IpAddr,

    /// Port of the gRPC sync server (flagd.sync.v1.FlagSyncService). 0: no TCP, gRPC on
    /// --redis-sync-socket-path only.
    #[arg(long, env = "REDIS_SYNC_PORT", default_value_t = 8016)]
    pub redis_sync_port: u16,

    /// PEM certificate chain: serve gRPC over TLS (needs --redis-sync-key-path).
    #[arg(long, env = "REDIS_SYNC_CERT_PATH", requires = "redis_sync_key_path")]
    pub redis_sync_cert_path: Option<PathBuf>,

    /// PEM private key for --redis-sync-cert-path. Both files are read again when they
    /// change (certificate rotation); open streams are not interrupted.
    #[arg(long, env = "REDIS_SYNC_KEY_PATH", requires = "redis_sync_cert_path")]
    pub redis_sync_key_path: Option<PathBuf>,

    /// PEM CA certificate(s): require every gRPC client to present a certificate signed by
    /// this CA (mutual TLS; needs --redis-sync-cert-path). Off by default: flagd's own gRPC
    /// sync client cannot present one.
    #[arg(
        long,
        env = "REDIS_SYNC_CLIENT_CA_PATH",
        requires = "redis_sync_cert_path"
    )]
    pub redis_sync_client_ca_path: Option<PathBuf>,

    /// File of bearer tokens, one per line: sync and reflection calls must send
    /// `authorization: Bearer <token>` (flagd: the source's "headers"), else UNAUTHENTICATED.
    /// gRPC health stays open. Read again when it changes.
    #[arg(long, env = "REDIS_SYNC_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Also serve gRPC on this Unix socket (created mode 0660, removed on exit).
    #[arg(long, env = "REDIS_SYNC_SOCKET_PATH")]
    pub redis_sync_socket_path: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "REDIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Console)]
    pub redis_log_format: LogFormat,

    /// Log at debug level (RUST_LOG, when set, takes precedence).
    #[arg(long, env = "REDIS_SYNC_DEBUG")]
    pub debug: bool,

    /// Port of the management HTTP server: /healthz, /readyz, /metrics. 0 disables it.
    #[arg(long, env = "REDIS_SYNC_MANAGEMENT_PORT", default_value_t = 8014)]
    pub management_port: u16,

    /// Refuse flag documents larger than this many bytes; the last good document stays.
    /// The default leaves room under the 4 MiB receive limit of gRPC clients.
    #[arg(long, env = "REDIS_SYNC_MAX_PAYLOAD_BYTES", default_value_t = crate::flags::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// Send documents as stored instead of the form every client accepts (map form of
    /// `flags`, only the flag fields providers know).
    #[arg(long, env = "REDIS_SYNC_NO_NORMALIZE")]
    pub no_normalize: bool,

    /// Static KEY=VALUE sent to clients as sync_context and by GetMetadata (repeatable).
    #[arg(long = "context-value", env = "REDIS_SYNC_CONTEXT_VALUES", value_delimiter = ',', value_parser = parse_key_value)]
    pub context_values: Vec<(String, String)>,

    /// Seconds to let streams end and connections close after SIGTERM/SIGINT.
    #[arg(long, env = "REDIS_SYNC_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,

    /// What to do when the flag key disappears (DEL, expiry, eviction, RENAME, FLUSHALL):
    /// keep serving the last good document, or push an empty flag set.
    #[arg(long, env = "REDIS_SYNC_ON_MISSING_KEY", value_enum, default_value_t = OnMissingKey::Keep)]
    pub on_missing_key: OnMissingKey,

    /// Save each accepted document to this file (atomically) and serve it at start-up
    /// until Redis answers, so a restart while Redis is down still serves flags.
    #[arg(long, env = "REDIS_SYNC_SNAPSHOT_PATH")]
    pub snapshot_path: Option<PathBuf>,

    /// Refuse new SyncFlags streams beyond this many (RESOURCE_EXHAUSTED). 0: no limit.
    #[arg(long, env = "REDIS_SYNC_MAX_STREAMS", default_value_t = 0)]
    pub max_streams: u64,

    /// End each SyncFlags stream after about this many seconds (80-100%, jittered) with
    /// DEADLINE_EXCEEDED, so clients reconnect and load spreads after rolling restarts.
    /// 0: never.
    #[arg(long, env = "REDIS_SYNC_MAX_STREAM_DURATION", default_value_t = 0)]
    pub max_stream_duration: u64,

    /// Seconds between liveness PINGs on the Redis connection; a dead or black-holed
    /// connection is detected within this plus --redis-timeout.
    #[arg(long, env = "REDIS_PING_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub redis_ping_interval: u64,
}

/// Behaviour when the flag key does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnMissingKey {
    /// Keep serving the last good document (and report the key as missing).
    Keep,
    /// Push an empty flag set `{"flags":{}}`: clients fall back to code defaults.
    Empty,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Everything the service needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub redis: RedisTarget,
    pub poll_interval: Duration,
    pub grpc_addr: std::net::SocketAddr,
    pub tls: Option<crate::tls::ServerTlsFiles>,
    /// `--auth-token-file`.
    pub auth_token_file: Option<PathBuf>,
    pub socket_path: Option<PathBuf>,
    pub management_port: Option<u16>,
    pub documents: crate::flags::Options,
    pub context: Vec<(String, String)>,
    pub shutdown_grace: Duration,
    pub on_missing_key: OnMissingKey,
    pub snapshot_path: Option<PathBuf>,
    pub max_streams: Option<u64>,
    pub max_stream_duration: Option<Duration>,
    pub redis_timeout: Duration,
    pub redis_ping_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A Redis option (URI, password, TLS files, sources).
    #[error(transparent)]
    Redis(#[from] TargetError),
    #[error("{0}")]
    Invalid(String),
}

impl ServeArgs {
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        self.to_config_with_env(|k| std::env::var(k).ok())
    }

    /// [`Self::to_config`] with the environment variables read outside clap
    /// (`REDIS_PASSWORD`) taken from `env`.
    pub fn to_config_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut redis = self.redis.target(env)?;
        let default_storage = redis.storage;
        for s in &self.sources {
            redis.add_source(SourceSpec::parse(s, default_storage)?)?;
        }
        if redis.sources.is_empty() {
            return Err(TargetError::NoKey {
                sources_allowed: true,
            }
            .into());
        }
        let tls = match (&self.redis_sync_cert_path, &self.redis_sync_key_path) {
            (Some(c), Some(k)) => {
                readable("--redis-sync-cert-path", c)?;
                readable("--redis-sync-key-path", k)?;
                if let Some(ca) = &self.redis_sync_client_ca_path {
                    readable("--redis-sync-client-ca-path", ca)?;
                }
                Some(crate::tls::ServerTlsFiles {
                    cert: c.clone(),
                    key: k.clone(),
                    client_ca: self.redis_sync_client_ca_path.clone(),
                })
            }
            _ => None,
        };
        if let Some(f) = &self.auth_token_file {
            readable("--auth-token-file", f)?;
        }
        if self.redis_sync_port == 0 {
            if self.redis_sync_socket_path.is_none() {
                return Err(ConfigError::Invalid(
                    "--redis-sync-port 0 turns gRPC over TCP off: give --redis-sync-socket-path"
                        .into(),
                ));
            }
            if tls.is_some() {
                return Err(ConfigError::Invalid(
                    "--redis-sync-cert-path: TLS is for TCP, and --redis-sync-port 0 turns TCP \
                     off (the Unix socket has no TLS)"
                        .into(),
                ));
            }
        }
        Ok(Config {
            redis,
            poll_interval: Duration::from_secs(self.redis_interval),
            grpc_addr: std::net::SocketAddr::new(self.redis_sync_host, self.redis_sync_port),
            tls,
            auth_token_file: self.auth_token_file.clone(),
            socket_path: self.redis_sync_socket_path.clone(),
            management_port: (self.management_port != 0).then_some(self.management_port),
            documents: crate::flags::Options {
                max_bytes: self.max_payload_bytes,
                normalize: !self.no_normalize,
            },
            context: self.context_values.clone(),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            on_missing_key: self.on_missing_key,
            snapshot_path: self.snapshot_path.clone(),
            max_streams: (self.max_streams != 0).then_some(self.max_streams),
            max_stream_duration: (self.max_stream_duration != 0)
                .then(|| Duration::from_secs(self.max_stream_duration)),
            redis_timeout: self.redis.timeout(),
            redis_ping_interval: Duration::from_secs(self.redis_ping_interval),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::Storage;

    #[test]
    fn sources_from_flags() {
        let c = config_with(
            &[
                "--redis-uri",
                "redis://h/0",
                "--source",
                "team-a=flags:a",
                "--source",
                "team-b=flags:b;type=hash",
            ],
            &[],
        )
        .unwrap();
        let got: Vec<_> = c
            .redis
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.key.as_str(), s.storage))
            .collect();
        assert_eq!(
            got,
            [
                ("team-a", "flags:a", Storage::String),
                ("team-b", "flags:b", Storage::Hash)
            ]
        );
        let c = config_with(
            &[
                "--redis-uri",
                "redis://h/0?key=base",
                "--source",
                "x=k1,y=k2",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.redis
                .sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["base", "x", "y"]
        );
        for (args, want) in [
            (vec!["--redis-uri", "redis://h/0"], "no key"),
            (
                vec!["--redis-uri", "redis://h/0?key=k", "--source", "other=k"],
                "given to two sources",
            ),
            (
                vec![
                    "--redis-uri",
                    "redis://h/0",
                    "--source",
                    "a=k1",
                    "--source",
                    "a=k2",
                ],
                "used twice",
            ),
            (
                vec!["--redis-uri", "redis://h/0", "--source", "nokey"],
                "NAME=KEY",
            ),
        ] {
            let err = config_with(&args, &[]).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn cli_defaults_follow_the_original_design() {
        let cli = Cli::try_parse_from(["x", "--redis-uri", "redis://h/0?key=f"]).unwrap();
        let c = cli.serve.to_config().unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.grpc_addr.port(), 8016);
        assert_eq!(c.management_port, Some(8014));
        assert_eq!(cli.serve.redis_log_format, LogFormat::Console);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn config_with(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from([&["x"], args].concat()).unwrap();
        cli.serve.to_config_with_env(|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn passwords_from_the_environment_or_a_file_replace_the_uri_one() {
        let uri = ["--redis-uri", "redis://u:in-uri@h/0?key=f"];
        let c = config_with(&uri, &[("REDIS_PASSWORD", "from-env")]).unwrap();
        assert_eq!(c.redis.password.as_deref(), Some("from-env"));
        assert_eq!(c.redis.username.as_deref(), Some("u"));

        let dir = std::env::temp_dir().join(format!("cfg-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let f = file.to_str().unwrap();
        let c = config_with(&[&uri[..], &["--redis-password-file", f]].concat(), &[]).unwrap();
        assert_eq!(c.redis.password.as_deref(), Some("from-file"));
        assert!(!format!("{:?}", c.redis).contains("from-file"));

        let both = config_with(
            &[&uri[..], &["--redis-password-file", f]].concat(),
            &[("REDIS_PASSWORD", "from-env")],
        );
        assert!(matches!(
            both,
            Err(ConfigError::Redis(TargetError::TwoPasswords))
        ));
        std::fs::write(&file, "\n").unwrap();
        let empty = config_with(&[&uri[..], &["--redis-password-file", f]].concat(), &[]);
        assert!(matches!(
            empty,
            Err(ConfigError::Redis(TargetError::EmptyPasswordFile(_)))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn redis_tls_options_need_rediss() {
        let err = config_with(
            &["--redis-uri", "redis://h/0?key=f", "--redis-tls-insecure"],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("rediss://"), "{err}");
        let c = config_with(
            &["--redis-uri", "rediss://h/0?key=f", "--redis-tls-insecure"],
            &[],
        )
        .unwrap();
        assert!(c.redis.tls.insecure);
        let info = c.redis.connection_info().unwrap();
        assert!(matches!(
            info.addr(),
            redis::ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        // A missing CA file is a start-up error naming the flag.
        let err = config_with(
            &[
                "--redis-uri",
                "rediss://h/0?key=f",
                "--redis-ca-path",
                "/nonexistent/ca.pem",
            ],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("--redis-ca-path"), "{err}");
    }
}
