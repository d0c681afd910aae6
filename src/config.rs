//! Command line and environment: clap definitions, Redis URI parsing, validation.
//!
//! Every option has an environment variable: the flag's name upper-cased with `_` for
//! `-`, and options that do not start with `redis-` get a `REDIS_SYNC_` prefix
//! (`--redis-uri` -> `REDIS_URI`, `--management-port` -> `REDIS_SYNC_MANAGEMENT_PORT`).
//! Errors are one line a person can act on; they never contain a password.

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::fmt;
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
    /// How strictly documents are judged: strict (flagd's JSON schema, operators, $refs,
    /// variant names in rules) or basic (shape only; strict findings logged as warnings).
    #[arg(long, env = "REDIS_SYNC_VALIDATION", value_enum, default_value_t = crate::flags::Validation::Strict)]
    pub validation: crate::flags::Validation,
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
    /// Where the flags live: redis://[user:password@]host[:port][/db]?key=NAME, rediss://
    /// for TLS, unix:///path/to/redis.sock?db=N&key=NAME,
    /// redis+sentinel://host1:26379,host2:26379/MASTER/DB?key=NAME or
    /// redis+cluster://host1:6379,host2:6379/?key=NAME. The key must hold a flagd JSON
    /// document (a string; with type=hash, a hash of one field per flag); key= may repeat.
    /// Keep the password out of the URI (process lists show it): use REDIS_PASSWORD or
    /// --redis-password-file.
    #[arg(long, env = "REDIS_URI", required = true, hide_env_values = true)]
    pub redis_uri: Option<String>,

    /// A further flag source NAME=KEY (repeatable): clients select it with source=NAME
    /// (or a bare NAME); without a selector they get every source merged, later sources
    /// winning a flag-name clash. NAME=KEY;type=hash reads a hash of one field per flag.
    /// The URI's key= values (repeatable) are sources too, named by their key.
    #[arg(long = "source", env = "REDIS_SYNC_SOURCES", value_delimiter = ',')]
    pub sources: Vec<String>,

    /// File holding the Redis password (trailing newline ignored); replaces any password in
    /// the URI. The REDIS_PASSWORD environment variable does the same (give only one).
    #[arg(long, env = "REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// PEM CA certificate(s) that signed the Redis server's certificate (rediss:// only);
    /// default: the system's trusted roots.
    #[arg(long, env = "REDIS_CA_PATH")]
    pub redis_ca_path: Option<PathBuf>,

    /// PEM client certificate for Redis servers that require one (rediss:// only; needs
    /// --redis-key-path). Read again at each reconnect.
    #[arg(long, env = "REDIS_CERT_PATH", requires = "redis_key_path")]
    pub redis_cert_path: Option<PathBuf>,

    /// PEM private key for --redis-cert-path.
    #[arg(long, env = "REDIS_KEY_PATH", requires = "redis_cert_path")]
    pub redis_key_path: Option<PathBuf>,

    /// DEVELOPMENT ONLY: accept any certificate from the Redis server (self-signed, expired,
    /// another host's), so anyone on the network path can pose as Redis. Logged loudly.
    #[arg(long, env = "REDIS_TLS_INSECURE")]
    pub redis_tls_insecure: bool,

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

    /// Seconds allowed to connect to Redis and for any reply.
    #[arg(long, env = "REDIS_TIMEOUT", allow_negative_numbers = true, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=300).map(|s| s as u64))]
    pub redis_timeout: u64,

    /// Seconds between liveness PINGs on the Redis connection; a dead or black-holed
    /// connection is detected within this plus --redis-timeout.
    #[arg(long, env = "REDIS_PING_INTERVAL", allow_negative_numbers = true, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=3600).map(|s| s as u64))]
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
    /// `--max-connections` (`None`: derived from the open-files limit).
    pub max_connections: Option<usize>,
    pub redis_timeout: Duration,
    pub redis_ping_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--redis-uri: {0}")]
    Uri(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{flag}: cannot read {path}: {source}")]
    File {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
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
        let uri = self
            .redis_uri
            .as_deref()
            .ok_or_else(|| ConfigError::Uri("required (or set REDIS_URI)".into()))?;
        let mut redis = RedisTarget::parse_keys_optional(uri)?;
        let default_storage = redis.storage;
        for s in &self.sources {
            redis
                .add_source(SourceSpec::parse(s, default_storage).map_err(ConfigError::Invalid)?)?;
        }
        if redis.sources.is_empty() {
            return Err(ConfigError::Uri(
                "no key: add ?key=NAME (the Redis key that holds the flag document) or give \
                 --source NAME=KEY"
                    .into(),
            ));
        }
        redis.tls = self.redis_tls(&redis)?;
        match (&self.redis_password_file, env("REDIS_PASSWORD")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "REDIS_PASSWORD and --redis-password-file are both set: give only one".into(),
                ))
            }
            (Some(path), None) => redis.password = Some(password_file(path)?),
            (None, Some(pw)) if !pw.is_empty() => redis.password = Some(pw),
            _ => {}
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
                validation: self.validation,
            },
            context: self.context_values.clone(),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            on_missing_key: self.on_missing_key,
            snapshot_path: self.snapshot_path.clone(),
            max_streams: (self.max_streams != 0).then_some(self.max_streams),
            max_stream_duration: (self.max_stream_duration != 0)
                .then(|| Duration::from_secs(self.max_stream_duration)),
            max_connections: (self.max_connections != 0).then_some(self.max_connections),
            redis_timeout: Duration::from_secs(self.redis_timeout),
            redis_ping_interval: Duration::from_secs(self.redis_ping_interval),
        })
    }
}

impl ServeArgs {
    /// The Redis TLS options, which only a rediss:// URI may use.
    fn redis_tls(&self, target: &RedisTarget) -> Result<RedisTls, ConfigError> {
        let tls = RedisTls {
            ca: self.redis_ca_path.clone(),
            client: self
                .redis_cert_path
                .clone()
                .zip(self.redis_key_path.clone()),
            insecure: self.redis_tls_insecure,
        };
        let is_tls = target.addr.is_tls();
        if !is_tls && tls != RedisTls::default() {
            return Err(ConfigError::Invalid(
                "--redis-ca-path, --redis-cert-path, --redis-key-path and --redis-tls-insecure \
                 need a rediss:// URI (TLS)"
                    .into(),
            ));
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
fn password_file(path: &std::path::Path) -> Result<String, ConfigError> {
    let text = crate::files::read_secret_string(path).map_err(|source| ConfigError::File {
        flag: "--redis-password-file",
        path: path.display().to_string(),
        source,
    })?;
    let pw = text.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "--redis-password-file {} is empty",
            path.display()
        )));
    }
    Ok(pw.to_string())
}

fn readable(flag: &'static str, path: &std::path::Path) -> Result<(), ConfigError> {
    crate::files::read_secret(path)
        .map(drop)
        .map_err(|source| ConfigError::File {
            flag,
            path: path.display().to_string(),
            source,
        })
}

/// Where a Redis server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAddr {
    Tcp {
        host: String,
        port: u16,
        tls: bool,
    },
    Unix(PathBuf),
    /// `redis+sentinel://`: ask these sentinels where the master named `master` is.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        tls: bool,
        /// Credentials for the sentinels themselves (`sentinel_user=`,
        /// `sentinel_password=`); the data nodes use the URI's.
        auth: Option<(Option<String>, String)>,
    },
    /// `redis+cluster://`: any of these nodes tells which master owns the key's slot.
    Cluster {
        seeds: Vec<(String, u16)>,
        tls: bool,
    },
}

impl RedisAddr {
    /// Whether traffic to the data nodes is TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            RedisAddr::Tcp { tls, .. }
            | RedisAddr::Sentinel { tls, .. }
            | RedisAddr::Cluster { tls, .. } => *tls,
            RedisAddr::Unix(_) => false,
        }
    }
}

/// How a source's document is stored in its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Storage {
    /// A string holding the whole JSON document (SET).
    #[default]
    String,
    /// A hash: one field per flag (HSET key FLAG JSON), plus optional `$evaluators` and
    /// `$metadata` fields; assembled into one document.
    Hash,
}

impl Storage {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "string" => Ok(Storage::String),
            "hash" => Ok(Storage::Hash),
            other => Err(format!("type={other:?}: use type=string or type=hash")),
        }
    }
}

/// One flag source: a name clients select it by, and the Redis key behind it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceSpec {
    /// `source=NAME` selects it; for a `key=` in the URI, the key itself.
    pub name: String,
    pub key: String,
    pub storage: Storage,
}

impl SourceSpec {
    /// Parses `--source NAME=KEY[;type=hash]`.
    pub fn parse(s: &str, default: Storage) -> Result<Self, String> {
        let (spec, storage) = match s.split_once(";type=") {
            Some((spec, t)) => (spec, Storage::parse(t)?),
            None => (s, default),
        };
        match spec.split_once('=') {
            Some((name, key)) if !name.trim().is_empty() && !key.is_empty() => Ok(SourceSpec {
                name: name.trim().to_string(),
                key: key.to_string(),
                storage,
            }),
            _ => Err(format!(
                "--source {s:?}: expected NAME=KEY or NAME=KEY;type=hash (NAME is what clients \
                 select with source=NAME, KEY the Redis key)"
            )),
        }
    }
}

/// TLS settings for a rediss:// target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// CA certificate(s) to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub client: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate (development only).
    pub insecure: bool,
}

/// A parsed `--redis-uri`. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub addr: RedisAddr,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The first source's key (the one `put`, `watch` and the doctor work on).
    pub key: String,
    /// Every source, in precedence order: on a flag name clash the later one wins.
    pub sources: Vec<SourceSpec>,
    /// The URI's `type=`: the storage of its keys, and the default for `--source`.
    pub storage: Storage,
    /// rediss:// only: `--redis-ca-path`, `--redis-cert-path`/`--redis-key-path`,
    /// `--redis-tls-insecure`.
    pub tls: RedisTls,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn host_list(nodes: &[(String, u16)]) -> String {
    nodes
        .iter()
        .map(|(h, p)| host_port(h, *p))
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for RedisTarget {
    /// The URI with any password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            (None, Some(_)) => ":***@".to_string(),
            (None, None) => String::new(),
        };
        let mut query: Vec<String> = Vec::new();
        // Every key watched (a `--source` key too: log lines should name it).
        for s in &self.sources {
            query.push(format!("key={}", s.key));
        }
        if self.sources.is_empty() && !self.key.is_empty() {
            query.push(format!("key={}", self.key));
        }
        if self.storage == Storage::Hash {
            query.push("type=hash".into());
        }
        let tls_s = if self.addr.is_tls() { "s" } else { "" };
        let db = self.db;
        match &self.addr {
            RedisAddr::Tcp { host, port, .. } => {
                let hp = host_port(host, *port);
                write!(f, "redis{tls_s}://{auth}{hp}/{db}?{}", query.join("&"))
            }
            RedisAddr::Unix(p) => write!(
                f,
                "unix://{auth}{}?db={db}&{}",
                p.display(),
                query.join("&")
            ),
            RedisAddr::Sentinel {
                sentinels,
                master,
                auth: sentinel_auth,
                ..
            } => {
                if let Some((user, _)) = sentinel_auth {
                    if let Some(u) = user {
                        query.push(format!("sentinel_user={u}"));
                    }
                    query.push("sentinel_password=***".into());
                }
                let hosts = host_list(sentinels);
                write!(
                    f,
                    "redis{tls_s}+sentinel://{auth}{hosts}/{master}/{db}?{}",
                    query.join("&")
                )
            }
            RedisAddr::Cluster { seeds, .. } => {
                let hosts = host_list(seeds);
                write!(
                    f,
                    "redis{tls_s}+cluster://{auth}{hosts}/?{}",
                    query.join("&")
                )
            }
        }
    }
}

/// Schemes that name several hosts; `url` reads one host only, so the host list is cut
/// out first and the rest parsed as a plain redis:// URI.
const MULTI_HOST: [&str; 4] = [
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
];

/// Splits `scheme://[auth@]h1:p1,h2:p2/rest` into the host list and a redis:// URI with
/// the first host, or returns `None` for single-host schemes.
/// A multi-host URI cut in parts: its scheme, its hosts, and a single-host equivalent.
type MultiHost = (String, Vec<(String, u16)>, String);

fn split_hosts(
    uri: &str,
    default_port: impl Fn(&str) -> u16,
) -> Result<Option<MultiHost>, ConfigError> {
    let bad = |m: String| ConfigError::Uri(m);
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(None);
    };
    if !MULTI_HOST.contains(&scheme) {
        return Ok(None);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    let mut nodes = Vec::new();
    for h in hosts.split(',').filter(|h| !h.is_empty()) {
        let (host, port) = if let Some(v6) = h.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad(format!("host {h:?}: unclosed [ in an IPv6 address")))?;
            (host, after.strip_prefix(':'))
        } else {
            match h.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            }
        };
        let port = match port {
            None => default_port(scheme),
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                bad(format!(
                    "host {host:?}: port {p:?} is not a valid port (1-65535)"
                ))
            })?,
        };
        if host.is_empty() {
            return Err(bad(format!("empty host in the host list of {scheme}://")));
        }
        nodes.push((host.to_string(), port));
    }
    if nodes.is_empty() {
        return Err(bad(format!(
            "no host: expected {scheme}://host1:port1,host2:port2/…"
        )));
    }
    let plain = if scheme.starts_with("rediss") {
        "rediss"
    } else {
        "redis"
    };
    let first = host_port(&nodes[0].0, nodes[0].1);
    Ok(Some((
        scheme.to_string(),
        nodes,
        format!("{plain}://{userinfo}{first}{tail}"),
    )))
}

impl RedisTarget {
    /// Parses a URI that names at least one key.
    pub fn parse(uri: &str) -> Result<Self, ConfigError> {
        let t = Self::parse_keys_optional(uri)?;
        if t.sources.is_empty() {
            return Err(ConfigError::Uri(
                "no key: add ?key=NAME, the Redis key that holds the flag document".into(),
            ));
        }
        Ok(t)
    }

    /// Parses a URI; its `key=` may be left out when sources come from `--source`.
    pub fn parse_keys_optional(uri: &str) -> Result<Self, ConfigError> {
        let bad = |m: String| ConfigError::Uri(m);
        let multi = split_hosts(uri, |scheme| {
            if scheme.ends_with("sentinel") {
                26379
            } else {
                6379
            }
        })?;
        let parsed_uri = multi.as_ref().map_or(uri, |(_, _, u)| u.as_str());
        // Never echo the URI itself: it may hold a password.
        let url = url::Url::parse(parsed_uri).map_err(|e| {
            bad(format!(
                "not a valid URI ({e}); expected redis://[user:password@]host[:port][/db]?key=NAME"
            ))
        })?;
        if !matches!(url.scheme(), "redis" | "rediss" | "unix" | "redis+unix") {
            return Err(bad(format!(
                "unsupported scheme {:?}: use redis://, rediss:// (TLS), unix://, \
                 redis+sentinel:// or redis+cluster://",
                url.scheme()
            )));
        }
        let mut keys: Vec<String> = Vec::new();
        let mut storage = Storage::String;
        let mut db_q: Option<String> = None;
        let mut user_q: Option<String> = None;
        let mut pass_q: Option<String> = None;
        let mut sentinel_user: Option<String> = None;
        let mut sentinel_pass: Option<String> = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "key" if v.is_empty() => {}
                "key" if keys.iter().any(|k| *k == v) => {
                    return Err(bad(format!("key={v} given twice")))
                }
                "key" => keys.push(v.into_owned()),
                "type" => storage = Storage::parse(&v).map_err(bad)?,
                "db" => db_q = Some(v.into_owned()),
                "user" | "username" => user_q = Some(v.into_owned()),
                "password" | "pass" => pass_q = Some(v.into_owned()),
                "sentinel_user" => sentinel_user = Some(v.into_owned()),
                "sentinel_password" => sentinel_pass = Some(v.into_owned()),
                "protocol" => {}
                other => {
                    return Err(bad(format!(
                        "unknown query parameter {other:?} (known: key, type, db, user, password, \
                         sentinel_user, sentinel_password)"
                    )))
                }
            }
        }
        let decode = |s: &str| {
            percent_decode(s)
                .map_err(|_| bad("user name or password is not valid percent-encoded UTF-8".into()))
        };
        let mut username = (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?;
        let mut password = url.password().map(decode).transpose()?;
        if user_q.is_some() {
            username = user_q;
        }
        if pass_q.is_some() {
            password = pass_q;
        }
        let path = url.path().trim_start_matches('/').to_string();
        let (addr, path_db) = match (&multi, url.scheme()) {
            (Some((scheme, nodes, _)), _) if scheme.ends_with("sentinel") => {
                let (master, db) = match path.split_once('/') {
                    Some((m, db)) => (m, (!db.is_empty()).then(|| db.to_string())),
                    None => (path.as_str(), None),
                };
                if master.is_empty() {
                    return Err(bad(format!(
                        "no master name: expected {scheme}://host1:26379,host2:26379/MASTER_NAME/DB?key=NAME"
                    )));
                }
                let auth = sentinel_pass.map(|p| (sentinel_user.take(), p));
                (
                    RedisAddr::Sentinel {
                        sentinels: nodes.clone(),
                        master: master.to_string(),
                        tls: scheme.starts_with("rediss"),
                        auth,
                    },
                    db,
                )
            }
            (Some((scheme, nodes, _)), _) => {
                if !path.is_empty() && path != "0" {
                    return Err(bad(format!(
                        "{scheme}:// has database 0 only (Redis Cluster), found {path:?}"
                    )));
                }
                (
                    RedisAddr::Cluster {
                        seeds: nodes.clone(),
                        tls: scheme.starts_with("rediss"),
                    },
                    None,
                )
            }
            (None, "redis" | "rediss") => {
                let host = match url.host() {
                    Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
                    Some(url::Host::Ipv4(a)) => a.to_string(),
                    Some(url::Host::Ipv6(a)) => a.to_string(),
                    _ => {
                        return Err(bad(
                            "no host: expected redis://host[:port]/db?key=NAME".into()
                        ))
                    }
                };
                if url.port() == Some(0) {
                    return Err(bad("port 0 is not a valid Redis port".into()));
                }
                let port = url.port().unwrap_or(6379);
                (
                    RedisAddr::Tcp {
                        host,
                        port,
                        tls: url.scheme() == "rediss",
                    },
                    (!path.is_empty()).then_some(path),
                )
            }
            (None, _) => {
                if url.path().is_empty() || url.path() == "/" {
                    return Err(bad(
                        "no socket path: expected unix:///path/to/redis.sock?key=NAME".into(),
                    ));
                }
                (RedisAddr::Unix(PathBuf::from(url.path())), None)
            }
        };
        if sentinel_user.is_some() && !matches!(addr, RedisAddr::Sentinel { .. }) {
            return Err(bad(
                "sentinel_user= needs sentinel_password= and a redis+sentinel:// URI".into(),
            ));
        }
        let db = match path_db.or(db_q) {
            None => 0,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|d| (0..=i64::from(i32::MAX)).contains(d))
                .ok_or_else(|| {
                    bad(format!(
                        "database must be a number from 0 to {} (most servers have 16: 0-15), found {s:?}",
                        i32::MAX
                    ))
                })?,
        };
        let sources: Vec<SourceSpec> = keys
            .into_iter()
            .map(|k| SourceSpec {
                name: k.clone(),
                key: k,
                storage,
            })
            .collect();
        Ok(RedisTarget {
            addr,
            db,
            username,
            password,
            key: sources.first().map(|s| s.key.clone()).unwrap_or_default(),
            sources,
            storage,
            tls: RedisTls::default(),
        })
    }

    /// Adds a `--source`; names and keys must stay unique.
    pub fn add_source(&mut self, spec: SourceSpec) -> Result<(), ConfigError> {
        if let Some(s) = self.sources.iter().find(|s| s.name == spec.name) {
            return Err(ConfigError::Invalid(format!(
                "source name {:?} is used twice (key {:?} and key {:?}); names must be unique",
                spec.name, s.key, spec.key
            )));
        }
        if let Some(s) = self.sources.iter().find(|s| s.key == spec.key) {
            return Err(ConfigError::Invalid(format!(
                "key {:?} is given to two sources ({:?} and {:?}); give it once",
                spec.key, s.name, spec.name
            )));
        }
        if self.sources.is_empty() {
            self.key = spec.key.clone();
        }
        self.sources.push(spec);
        Ok(())
    }

    /// The same credentials and TLS settings, for one node at `host:port` (a resolved
    /// Sentinel master or Cluster slot owner).
    pub fn at_node(&self, host: &str, port: u16) -> RedisTarget {
        RedisTarget {
            addr: RedisAddr::Tcp {
                host: host.to_string(),
                port,
                tls: self.addr.is_tls(),
            },
            ..self.clone()
        }
    }

    /// The keyspace-notification channel for a key.
    pub fn channel_of(&self, key: &str) -> String {
        format!("__keyspace@{}__:{}", self.db, key)
    }

    /// The keyspace-notification channel for the first key.
    pub fn keyspace_channel(&self) -> String {
        self.channel_of(&self.key)
    }

    /// Connection settings for redis-rs. RESP3, so one connection carries commands and
    /// pushes (keyspace messages, tracking invalidations).
    pub fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let addr = match &self.addr {
            RedisAddr::Tcp {
                host,
                port,
                tls: false,
            } => redis::ConnectionAddr::Tcp(host.clone(), *port),
            RedisAddr::Tcp {
                host,
                port,
                tls: true,
            } => redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: self.tls.insecure,
                tls_params: None,
            },
            RedisAddr::Unix(p) => redis::ConnectionAddr::Unix(p.clone()),
            RedisAddr::Sentinel { .. } | RedisAddr::Cluster { .. } => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "a redis+sentinel:// or redis+cluster:// target is resolved to one node before connecting",
                )))
            }
        };
        let mut settings = redis::RedisConnectionInfo::default()
            .set_db(self.db)
            .set_protocol(redis::ProtocolVersion::RESP3);
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        Ok(addr.into_connection_info()?.set_redis_settings(settings))
    }

    /// What usually causes a connection error, for the message (empty if nothing useful).
    pub fn connect_hint(&self, e: &redis::RedisError, timeout: Duration) -> String {
        let text = e.to_string();
        let RedisAddr::Tcp { host, port, tls } = &self.addr else {
            return String::new();
        };
        let has = |s: &str| text.contains(s);
        if *tls {
            if e.is_timeout() || has("InvalidContentType") || has("corrupt message") {
                return format!(
                    " (rediss://: no TLS answer from {host}:{port} within {timeout:?}; is it \
                     Redis's TLS port (--tls-port)? A plain port needs redis://)"
                );
            }
            if has("UnknownIssuer") {
                return " (the Redis server's certificate is not signed by a CA this service \
                         trusts: give its CA with --redis-ca-path)"
                    .into();
            }
            if has("NotValidForName") || has("not valid for name") {
                return format!(
                    " (the Redis server's certificate does not name {host}: connect with a host \
                     name the certificate holds)"
                );
            }
            if has("CertificateRequired") || has("certificate required") {
                return " (the Redis server requires a client certificate: give \
                         --redis-cert-path and --redis-key-path)"
                    .into();
            }
        } else if e.is_connection_dropped() || has("reset") || has("broken pipe") {
            return format!(" (if {host}:{port} is Redis's TLS port, use rediss://)");
        }
        String::new()
    }

    /// A redis-rs client for the target, with the CA and client certificate files read now
    /// (so a rotated client certificate is used from the next connection on).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.connection_info()?;
        let is_tls = self.addr.is_tls();
        if !is_tls || (self.tls.ca.is_none() && self.tls.client.is_none()) {
            return redis::Client::open(info);
        }
        let read = |flag: &'static str, path: &PathBuf| {
            crate::files::read_secret(path).map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot read a TLS file",
                    format!("{flag} {}: {e}", path.display()),
                ))
            })
        };
        let client_tls = match &self.tls.client {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read("--redis-cert-path", cert)?,
                client_key: read("--redis-key-path", key)?,
            }),
            None => None,
        };
        let root_cert = match &self.tls.ca {
            Some(ca) => Some(read("--redis-ca-path", ca)?),
            None => None,
        };
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    }
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RedisTarget {
        RedisTarget::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn e(s: &str) -> String {
        RedisTarget::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn uri_forms() {
        let t = p("redis://localhost:6380/2?key=flags");
        assert_eq!(
            t.addr,
            RedisAddr::Tcp {
                host: "localhost".into(),
                port: 6380,
                tls: false
            }
        );
        assert_eq!((t.db, t.key.as_str()), (2, "flags"));
        assert_eq!(t.keyspace_channel(), "__keyspace@2__:flags");

        let t = p("rediss://user:p%40ss@redis.example:6390?key=ff");
        assert_eq!(
            t.addr,
            RedisAddr::Tcp {
                host: "redis.example".into(),
                port: 6390,
                tls: true
            }
        );
        assert_eq!(
            (t.username.as_deref(), t.password.as_deref(), t.db),
            (Some("user"), Some("p@ss"), 0)
        );

        let t = p("redis://:secret@127.0.0.1/0?key=flags");
        assert_eq!((t.username, t.password.as_deref()), (None, Some("secret")));

        let t = p("redis://[::1]:7000/1?key=a:b");
        assert_eq!(
            t.addr,
            RedisAddr::Tcp {
                host: "::1".into(),
                port: 7000,
                tls: false
            }
        );
        assert_eq!(t.key, "a:b");

        let t = p("unix:///run/redis/redis.sock?db=3&key=flags&password=pw");
        assert_eq!(t.addr, RedisAddr::Unix("/run/redis/redis.sock".into()));
        assert_eq!((t.db, t.password.as_deref()), (3, Some("pw")));
    }

    #[test]
    fn several_keys_sentinel_and_cluster_uris() {
        let t = p("redis://h:1/0?key=a&key=b&type=hash");
        let names: Vec<_> = t
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.key.as_str(), s.storage))
            .collect();
        assert_eq!(
            names,
            [("a", "a", Storage::Hash), ("b", "b", Storage::Hash)]
        );
        assert_eq!(t.key, "a");
        assert_eq!(t.to_string(), "redis://h:1/0?key=a&key=b&type=hash");

        let t = p("redis+sentinel://:pw@s1:26380,s2,[::1]:26381/mymaster/2?key=flags&sentinel_password=spw");
        assert_eq!(
            t.addr,
            RedisAddr::Sentinel {
                sentinels: vec![
                    ("s1".into(), 26380),
                    ("s2".into(), 26379),
                    ("::1".into(), 26381)
                ],
                master: "mymaster".into(),
                tls: false,
                auth: Some((None, "spw".into())),
            }
        );
        assert_eq!((t.db, t.password.as_deref()), (2, Some("pw")));
        let shown = t.to_string();
        assert!(!shown.contains("pw@") && !shown.contains("spw"), "{shown}");
        assert_eq!(
            shown,
            "redis+sentinel://:***@s1:26380,s2:26379,[::1]:26381/mymaster/2?key=flags&sentinel_password=***"
        );
        let node = t.at_node("10.0.0.5", 6380);
        assert_eq!(node.to_string(), "redis://:***@10.0.0.5:6380/2?key=flags");

        let t = p("rediss+cluster://n1:7000,n2:7001/?key={flags}:a&key={flags}:b");
        assert_eq!(
            t.addr,
            RedisAddr::Cluster {
                seeds: vec![("n1".into(), 7000), ("n2".into(), 7001)],
                tls: true
            }
        );
        assert!(t.at_node("n3", 7002).addr.is_tls());
        assert_eq!(t.sources.len(), 2);
        assert!(e("redis+cluster://n1:7000/3?key=f").contains("database 0 only"));
        assert!(e("redis+sentinel://s1:26379/?key=f").contains("no master name"));
        assert!(e("redis+sentinel://s1:x/m?key=f").contains("not a valid port"));
        assert!(e("redis://h/0?key=a&key=a").contains("twice"));
        assert!(e("redis://h/0?key=a&type=list").contains("type=hash"));
    }

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
    fn bad_uris_say_what_to_do_and_never_echo_secrets() {
        for (uri, want) in [
            ("redis://localhost:6379/0", "no key"),
            ("redis://localhost:6379/0?key=", "no key"),
            ("http://localhost/?key=f", "unsupported scheme \"http\""),
            ("redis://h:99999/0?key=f", "not a valid URI"),
            ("redis://h:0/0?key=f", "port 0"),
            ("redis://h/x?key=f", "database must be a number"),
            ("redis://u:hunter2@h/x?key=f", "database must be a number"),
            ("redis://h/0?key=f&foo=1", "unknown query parameter"),
            ("unix://?key=f", "no socket path"),
            ("localhost:6379", "unsupported scheme"),
        ] {
            let msg = e(uri);
            assert!(msg.contains(want), "{uri}: {msg}");
            assert!(!msg.contains("hunter2"), "{uri}: {msg}");
        }
    }

    #[test]
    fn display_redacts_the_password() {
        let t = p("redis://admin:hunter2@h:1/0?key=f");
        assert_eq!(t.to_string(), "redis://admin:***@h:1/0?key=f");
        assert!(!format!("{t:?}").contains("hunter2"));
        let t = p("unix:///s.sock?password=hunter2&key=f");
        assert!(!t.to_string().contains("hunter2"));
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
        assert!(matches!(both, Err(ConfigError::Invalid(m)) if m.contains("only one")));
        std::fs::write(&file, "\n").unwrap();
        let empty = config_with(&[&uri[..], &["--redis-password-file", f]].concat(), &[]);
        assert!(matches!(empty, Err(ConfigError::Invalid(m)) if m.contains("empty")));
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,80}") {
            let _ = RedisTarget::parse(&s);
        }

        #[test]
        fn passwords_never_show(
            user in "[a-z]{1,8}",
            password in "[A-Za-z0-9]{6,16}",
            host in "[a-z]{1,10}",
            port in 1u16..,
            db in 0i64..16,
            key in "[a-z:]{1,12}",
        ) {
            let uri = format!("redis://{user}:{password}@{host}:{port}/{db}?key={key}");
            let t = RedisTarget::parse(&uri).unwrap();
            prop_assert_eq!(t.password.as_deref(), Some(password.as_str()));
            prop_assert_eq!((t.db, t.key.as_str()), (db, key.as_str()));
            let shown = format!("{t} {t:?}");
            prop_assert!(!shown.contains(&password), "{}", shown);
            // Every error message about a URI with this password stays clean too.
            let broken = format!("redis://{user}:{password}@{host}:{port}/x{db}?key={key}");
            let e = RedisTarget::parse(&broken).unwrap_err().to_string();
            prop_assert!(!e.contains(&password), "{}", e);
        }

        #[test]
        fn redacted_display_parses_back_to_the_same_target_without_password(
            host in "[a-z]{1,10}", port in 1u16.., db in 0i64..16, key in "[a-z]{1,12}", tls in any::<bool>(),
        ) {
            let scheme = if tls { "rediss" } else { "redis" };
            let t = RedisTarget::parse(&format!("{scheme}://{host}:{port}/{db}?key={key}")).unwrap();
            prop_assert_eq!(RedisTarget::parse(&t.to_string()).unwrap(), t);
        }
    }
}
