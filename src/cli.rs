//! The command line: every clap definition (options, environment variables, defaults,
//! `--help` text) in flattened `#[derive(Args)]` groups, and the conversion of what was
//! given into each command's checked input. Only `main.rs` uses it; the Redis options
//! are the one group defined below it ([`crate::redis::RedisArgs`]), because every
//! command that talks to Redis shares them.
//!
//! Every option of the service has an environment variable: the flag's name upper-cased
//! with `_` for `-`, and options that do not start with `redis-` get a `REDIS_SYNC_`
//! prefix (`--redis-uri` -> `REDIS_URI`, `--management-port` ->
//! `REDIS_SYNC_MANAGEMENT_PORT`). Errors are one line a person can act on; they never
//! contain a password.

use crate::config::{Config, ConfigError, OnMissingKey};
use crate::doctor::ReportFormat;
use crate::flags::Options;
use crate::redis::args::readable;
use crate::redis::{RedisArgs, RedisTarget, SourceSpec, TargetError};
use crate::telemetry::LogFormat;
use crate::tools::{put, watch};
use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Serves a flagd flag document kept in Redis to flagd and OpenFeature providers over
/// flagd's gRPC sync protocol, pushing every change as Redis reports it.
#[derive(Debug, Parser)]
#[command(name = "flagd-redis-sync", version = crate::flags::schema::VERSION_LINE, about, long_about = None)]
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
    /// Validate a flag document, then store it in the Redis key atomically (one SET; with
    /// type=hash one MULTI/EXEC).
    /// Exit 0: stored; 1: refused; 2: file unreadable; 3: Redis error; 64: bad URI.
    Put(PutArgs),
    /// Follow a sync server as a client does and print a line per document received.
    /// Exit 0: --count reached; 1: the stream could not open or ended.
    Watch(WatchArgs),
    /// Probe a running instance's /readyz (for container health checks). Exit 0: ready;
    /// 1: not ready or unreachable, with the reason on one line.
    Healthcheck(HealthcheckArgs),
    /// Check the Redis behind the service for production readiness (version, persistence,
    /// eviction, TTL, notifications, rights, TLS…). Exit 0: all OK; 1: warnings; 2: failures.
    Doctor(DoctorArgs),
}

/// How flag documents are judged: the options of every command that reads one (the
/// service, `validate`, `put`, `doctor`), with the service's help text and variables. A
/// command whose wording differs says so with `mut_arg` (see [`ValidateArgs`]); the
/// offline tools read no variable but `REDIS_SYNC_VALIDATION`.
#[derive(Debug, Clone, Args)]
pub struct DocumentArgs {
    /// Refuse flag documents larger than this many bytes; the last good document stays.
    /// The default leaves room under the 4 MiB receive limit of gRPC clients.
    #[arg(long, env = "REDIS_SYNC_MAX_PAYLOAD_BYTES", allow_negative_numbers = true, default_value_t = crate::flags::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// Send documents as stored instead of the form every client accepts (map form of
    /// `flags`, only the flag fields providers know).
    #[arg(long, env = "REDIS_SYNC_NO_NORMALIZE")]
    pub no_normalize: bool,

    /// How strictly documents are judged: strict (flagd's JSON schema, operators, $refs,
    /// variant names in rules) or basic (shape only; strict findings logged as warnings).
    #[arg(long, env = "REDIS_SYNC_VALIDATION", value_enum, default_value_t = crate::flags::Validation::Strict)]
    pub validation: crate::flags::Validation,
}

impl DocumentArgs {
    /// The options documents are judged by.
    pub fn options(&self) -> Options {
        Options {
            max_bytes: self.max_payload_bytes,
            normalize: !self.no_normalize,
            validation: self.validation,
        }
    }
}

/// No variable for an option of an offline tool (`validate`, `put`): the service's
/// environment is not theirs.
const NO_ENV: Option<&str> = None;

#[derive(Debug, Args)]
#[command(
    mut_arg("no_normalize", |a| a.env(NO_ENV)
        .help("Check the document as stored, without rewriting it into the map form")),
    mut_arg("max_payload_bytes", |a| a.env(NO_ENV)
        .help("Refuse documents larger than this many bytes")),
)]
pub struct ValidateArgs {
    /// Flag document files to check (`-` reads standard input).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub documents: DocumentArgs,
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
    #[arg(long, env = "REDIS_INTERVAL", allow_negative_numbers = true, default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=86400).map(|s| s as u64))]
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

    /// `--max-payload-bytes`, `--no-normalize`, `--validation`.
    #[command(flatten)]
    pub documents: DocumentArgs,

    /// Static KEY=VALUE sent to clients as sync_context and by GetMetadata (repeatable).
    #[arg(long = "context-value", env = "REDIS_SYNC_CONTEXT_VALUES", value_delimiter = ',', value_parser = parse_key_value)]
    pub context_values: Vec<(String, String)>,

    /// Seconds to let streams end and connections close after SIGTERM/SIGINT.
    #[arg(
        long,
        env = "REDIS_SYNC_SHUTDOWN_GRACE",
        allow_negative_numbers = true,
        default_value_t = 10
    )]
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
    #[arg(
        long,
        env = "REDIS_SYNC_MAX_STREAMS",
        allow_negative_numbers = true,
        default_value_t = 0
    )]
    pub max_streams: u64,

    /// Hold at most this many gRPC TCP connections; more are closed at once. 0: the
    /// open-files limit (raised to its hard limit at start) less a reserve of 192 for
    /// Redis, the management port (its own 64) and files.
    #[arg(
        long,
        env = "REDIS_SYNC_MAX_CONNECTIONS",
        allow_negative_numbers = true,
        default_value_t = 0
    )]
    pub max_connections: usize,

    /// End each SyncFlags stream after about this many seconds (80-100%, jittered) with
    /// DEADLINE_EXCEEDED, so clients reconnect and load spreads after rolling restarts.
    /// 0: never.
    #[arg(
        long,
        env = "REDIS_SYNC_MAX_STREAM_DURATION",
        allow_negative_numbers = true,
        default_value_t = 0
    )]
    pub max_stream_duration: u64,

    /// Seconds between liveness PINGs on the Redis connection; a dead or black-holed
    /// connection is detected within this plus --redis-timeout.
    #[arg(long, env = "REDIS_PING_INTERVAL", allow_negative_numbers = true, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=3600).map(|s| s as u64))]
    pub redis_ping_interval: u64,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl ServeArgs {
    /// The service's checked configuration.
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
            documents: self.documents.options(),
            context: self.context_values.clone(),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            on_missing_key: self.on_missing_key,
            snapshot_path: self.snapshot_path.clone(),
            max_streams: (self.max_streams != 0).then_some(self.max_streams),
            max_stream_duration: (self.max_stream_duration != 0)
                .then(|| Duration::from_secs(self.max_stream_duration)),
            max_connections: (self.max_connections != 0).then_some(self.max_connections),
            redis_timeout: self.redis.timeout(),
            redis_ping_interval: Duration::from_secs(self.redis_ping_interval),
        })
    }
}

#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("no_normalize", |a| a.env(NO_ENV).help(
        "Judge the document as stored, without rewriting it into the map form (as the \
         service's --no-normalize)"
    )),
    mut_arg("max_payload_bytes", |a| a.env(NO_ENV)
        .help("Refuse documents larger than this many bytes (as the service's option)")),
)]
pub struct PutArgs {
    #[command(flatten)]
    pub redis: RedisArgs,

    /// The flag document (`-` reads standard input); not with --restore.
    #[arg(required_unless_present = "restore")]
    pub file: Option<PathBuf>,

    /// `--wait`, `--service`, `--wait-timeout`, `--restore`.
    #[command(flatten)]
    pub fleet: FleetArgs,

    /// Store only if the key's current document has this digest (the full SHA-256 or a
    /// prefix of at least 12 hex digits, as `/readyz`, `watch` and `put` print it), so two
    /// people editing at once cannot overwrite each other. Needs EVAL.
    #[arg(long, value_name = "SHA256")]
    pub if_digest: Option<String>,

    /// `--no-normalize`, `--max-payload-bytes`, `--validation`.
    #[command(flatten)]
    pub documents: DocumentArgs,
}

impl PutArgs {
    /// What to store where: the target as the service builds it (first key), the file,
    /// the options the document is judged by.
    pub fn request(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<put::Request, TargetError> {
        Ok(put::Request {
            target: self.redis.target(env)?.require_key()?,
            timeout: self.redis.timeout(),
            file: self.file.clone(),
            if_digest: self.if_digest.clone(),
            services: self.fleet.services.clone(),
            wait: self.fleet.wait,
            wait_timeout: Duration::from_secs(self.fleet.wait_timeout),
            restore: self.fleet.restore.clone(),
            documents: self.documents.options(),
        })
    }
}

/// The fleet options of `put`.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// After storing, wait until every --service serves the new document and has handed
    /// it to all of its streams; exit 4 listing the streams still behind after
    /// --wait-timeout.
    #[arg(long, requires = "services")]
    pub wait: bool,

    /// A service's management port, http://HOST:PORT (repeatable). A host name that
    /// resolves to several addresses (a Kubernetes headless service) means each address.
    #[arg(long = "service", value_name = "URL")]
    pub services: Vec<String>,

    /// Seconds --wait waits.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub wait_timeout: u64,

    /// Put back a document the service remembers (GET /changes lists them): fetched from
    /// the first --service, validated again, stored only if the key still holds what the
    /// service serves (or --if-digest).
    #[arg(
        long,
        value_name = "DIGEST",
        requires = "services",
        conflicts_with = "file"
    )]
    pub restore: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The sync server: HOST:PORT (e.g. localhost:8016), http://HOST:PORT, or
    /// https://HOST:PORT for TLS (with --ca-path). Not with --fleet.
    #[arg(required_unless_present = "fleet", conflicts_with = "fleet")]
    pub target: Option<String>,

    /// Instead of a stream: print each service's fleet view (GET /fleet: digest, streams
    /// current / behind / stalled, and the streams not current) every second. A
    /// management-port URL, http://HOST:PORT (repeatable; a host name with several
    /// addresses means each). Ends after --count rounds.
    #[arg(long, value_name = "URL")]
    pub fleet: Vec<String>,

    /// PEM CA certificate(s) to verify the server's certificate with; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub ca_path: Option<std::path::PathBuf>,

    /// Name to verify the server's certificate against (default: the target's host).
    #[arg(long, value_name = "NAME", requires = "ca_path")]
    pub tls_server_name: Option<String>,

    /// File holding a bearer token (first line), sent as `authorization: Bearer <token>`
    /// to a service started with --auth-token-file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// Selector (`flagSetId=ID`, `source=KEY`, or a bare KEY), sent as flagd's clients do:
    /// in the `flagd-selector` header and in the request body.
    #[arg(long, default_value = "")]
    pub selector: String,

    /// Print one JSON object per document (time, digest, sha256, bytes, flags).
    #[arg(long)]
    pub json: bool,

    /// Also print each document's JSON after its line.
    #[arg(long)]
    pub print_document: bool,

    /// Exit 0 after this many documents (the first one counts).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// provider_id sent in the request (shows in the server's debug logs).
    #[arg(long, default_value = "flagd-redis-sync-watch")]
    pub provider_id: String,

    /// Seconds allowed to connect.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub connect_timeout: u64,
}

impl WatchArgs {
    pub fn options(&self) -> watch::Options {
        watch::Options {
            target: self.target.clone().unwrap_or_default(),
            fleet: self.fleet.clone(),
            ca_path: self.ca_path.clone(),
            tls_server_name: self.tls_server_name.clone(),
            token_file: self.token_file.clone(),
            selector: self.selector.clone(),
            json: self.json,
            print_document: self.print_document,
            count: self.count,
            provider_id: self.provider_id.clone(),
            connect_timeout: Duration::from_secs(self.connect_timeout),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Management port of the instance on this host (127.0.0.1); the service's own
    /// variable, so a container probing itself follows a changed port.
    #[arg(long, env = "REDIS_SYNC_MANAGEMENT_PORT", default_value_t = 8014)]
    pub port: u16,

    /// Full URL to probe instead (http:// only), e.g. http://10.0.0.5:8014/readyz or
    /// .../healthz for liveness.
    #[arg(long)]
    pub url: Option<String>,

    /// Seconds allowed for the whole probe.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
}

/// `flagd-redis-sync doctor`: judges the key as the service would, so it reads the
/// service's variables.
#[derive(Debug, Args)]
#[command(
    mut_arg("max_payload_bytes", |a| a
        .help("The service's payload limit, against which the key's size is judged")),
    mut_arg("no_normalize", |a| a
        .help("Validate the document as stored, without rewriting it into the map form")),
)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Report format: one line per check, or one JSON object.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// `--max-payload-bytes`, `--no-normalize`, `--validation`.
    #[command(flatten)]
    pub documents: DocumentArgs,
}

impl DoctorArgs {
    /// The target as the service builds it from the same options (the first key is the
    /// one checked). Errors are usage errors.
    pub fn target(&self, env: impl Fn(&str) -> Option<String>) -> Result<RedisTarget, TargetError> {
        self.redis.target(env)?.require_key()
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

    fn doctor_args(extra: &[&str]) -> DoctorArgs {
        let argv = ["x", "doctor"].iter().chain(extra).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Doctor(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_target_takes_the_services_password_and_tls_options() {
        let no_env = |_: &str| None;
        let t = doctor_args(&["--redis-uri", "redis://h/0?key=f"])
            .target(no_env)
            .unwrap();
        assert_eq!(t.password, None);
        let env = |k: &str| (k == "REDIS_PASSWORD").then(|| "from-env".to_string());
        let t = doctor_args(&["--redis-uri", "redis://u:uri@h/0?key=f"])
            .target(env)
            .unwrap();
        assert_eq!(t.password.as_deref(), Some("from-env"));

        let dir = std::env::temp_dir().join(format!("doctor-pw-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let file = dir.to_str().unwrap();
        let a = doctor_args(&[
            "--redis-uri",
            "redis://h/0?key=f",
            "--redis-password-file",
            file,
        ]);
        assert_eq!(
            a.target(no_env).unwrap().password.as_deref(),
            Some("from-file")
        );
        assert!(matches!(a.target(env), Err(TargetError::TwoPasswords)));
        std::fs::remove_file(&dir).unwrap();

        let e = doctor_args(&["--redis-uri", "redis://h/0?key=f", "--redis-tls-insecure"])
            .target(no_env)
            .unwrap_err();
        assert!(matches!(e, TargetError::TlsWithoutRediss), "{e}");
        let t = doctor_args(&["--redis-uri", "rediss://h/0?key=f", "--redis-tls-insecure"])
            .target(no_env)
            .unwrap();
        assert!(t.tls.insecure);
    }
}
